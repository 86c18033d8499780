"""The gateway: authenticates clients and coordinates two-phase commit between banks."""
