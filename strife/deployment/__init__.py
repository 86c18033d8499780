"""One deployment as every process sees it: the topology, where its files are, its identities and
certificates, mTLS, and etcd. Nodes, clients, the launcher and the commands all stand on it."""
