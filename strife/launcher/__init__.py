"""The launcher: supervising a deployment's processes, its control socket, chaos and etcd's upkeep.
Nodes and clients never import it."""
