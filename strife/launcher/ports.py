"""Turning `port: 0` into real free ports at `up`, and checking that fixed ports are free."""
import dataclasses
import socket

from strife.deployment.topology import NodeKind


def _free(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host if host != "localhost" else "127.0.0.1", port))
        except OSError:
            return None
        return sock.getsockname()[1]


ETCD_PORTS = (2379, 2380)  # etcd's own defaults: with hosts, each member is alone at its address
FIRST_NODE_PORT = 7001
FIRST_METRICS_PORT = 9101  # nodes' Prometheus metrics (beside node_exporter's 9100)


def resolve_on_hosts(topology):
    """With hosts, every host has an address (and, on one machine, a network namespace) of its own
    where nothing else listens: ports 0 become fixed, predictable ones (etcd 2379/2380, nodes from
    7001 on; nodes' metrics 9101 on), the same on every machine that reads the topology. etcd's
    metrics are on its client port, behind its TLS (strife/launcher/etcd.py). No problems to report."""
    taken = {(n.host_name, p) for n in topology.nodes for p in (n.port, n.peer_port, n.metrics_port) if p}
    chosen = {n.name: {} for n in topology.nodes}
    for field, etcd_port, node_port in (("port", ETCD_PORTS[0], FIRST_NODE_PORT), ("peer_port", ETCD_PORTS[1], 0),
                                        ("metrics_port", -1, FIRST_METRICS_PORT)):
        for node in topology.nodes:
            if field == "metrics_port" and node.kind == NodeKind.ETCD and not node.metrics_port:
                chosen[node.name][field] = chosen[node.name].get("port", node.port)
                continue
            port = etcd_port if node.kind == NodeKind.ETCD else node_port
            if getattr(node, field) or not port:
                continue
            while (node.host_name, port) in taken:
                port += 1
            taken.add((node.host_name, port))
            chosen[node.name][field] = port
    return topology.with_nodes([dataclasses.replace(n, **chosen[n.name]) for n in topology.nodes]), []


def resolve(topology, previous=None):
    """A copy of `topology` where every port is concrete.

    A port chosen at a previous `up` is kept while it is free, so addresses stay stable.
    Returns (topology, problems) where problems name fixed ports some other program holds.
    """
    if topology.hosts:
        return resolve_on_hosts(topology)
    problems, taken, nodes = [], set(), []
    old = {n.name: n for n in previous.nodes} if previous else {}
    for node in topology.nodes:
        fields = {}
        for field in ("port", "peer_port", "metrics_port") if node.kind == NodeKind.ETCD else ("port", "metrics_port"):
            wanted = getattr(node, field)
            if wanted:
                if _free(node.host, wanted) is None:
                    problems.append(f"{node.name}: {field.replace('_', ' ')} {wanted} is in use by another program")
                fields[field] = wanted
            else:
                earlier = getattr(old[node.name], field, 0) if node.name in old else 0
                chosen = earlier if earlier and earlier not in taken and _free(node.host, earlier) else None
                while chosen is None or chosen in taken:
                    chosen = _free(node.host, 0)
                fields[field] = chosen
            taken.add(fields[field])
        nodes.append(dataclasses.replace(node, **fields))
    return topology.with_nodes(nodes), problems
