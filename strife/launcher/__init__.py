"""The launcher: topology, certificates, supervision, control socket, chaos."""
