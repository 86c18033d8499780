"""The launcher: topology, certificates, supervision, control socket, chaos."""
import os

# The supervisor forks node processes while its gRPC health probes are live; gRPC's fork
# handlers cannot help there and only warn. Must be set before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
