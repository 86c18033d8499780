"""Strife: a small, correct payment network over gRPC with mutual TLS."""
import os

# Every Strife process that spawns others (the CLI's foreground `up`, the daemon, benchmarks) may
# hold live gRPC threads when it does. gRPC's fork handlers cannot help there: they only warn, and
# restarting the poller in a child that then closes descriptors before exec can kill it
# (grpc/grpc#43055). This must be set before grpc is first imported, so it lives at the package root,
# which every entry point imports first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
