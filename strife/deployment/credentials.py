"""Demo credentials: a password per topology client, generated once, kept in state/credentials.json
(0600). The gateway hashes them into its user directory on first start; the client CLI reads them."""
import json
import os
import secrets

from strife.deployment.layout import Layout
from strife.deployment.topology import NodeKind, TopologyError


def _path(home):
    return Layout(home).credentials


def load(home):
    try:
        return json.loads(_path(home).read_text())
    except FileNotFoundError:
        return {}


def save(home, credentials):
    path = _path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(credentials, out, indent=2, sort_keys=True)
    os.replace(tmp, path)


def ensure(topology):
    """Give every topology client a password if it has none yet."""
    credentials = load(topology.home)
    missing = [c.name for c in topology.of_kind("client") if c.name not in credentials]
    for name in missing:
        credentials[name] = secrets.token_urlsafe(16)
    if missing or not _path(topology.home).exists():
        save(topology.home, credentials)
    return credentials


def password(home, user):
    return load(home).get(user)


def set_password(home, user, password):
    credentials = load(home)
    credentials[user] = password
    save(home, credentials)


_SECTION = {NodeKind.BANK: "banks", NodeKind.GATEWAY: "gateways", NodeKind.ETCD: "etcd"}  # where a node is named


def registered(topology):
    """(name, role) of users registered at run time (not in the topology) who have a password here.

    A bank, gateway or etcd member added to the topology under such a user's name is refused: its
    certificate would replace the user's, and that account could never be reached again."""
    users = load(topology.home)
    taken = [n for n in topology.nodes if n.name in users and n.kind != NodeKind.CLIENT]
    if taken:
        raise TopologyError([f"{_SECTION[n.kind]}.{n.name}: {n.name!r} is a user registered at run time "
                             f"(their password is in {_path(topology.home)}); a node cannot take a user's "
                             f"name and certificate: rename the node" for n in taken])
    nodes = {n.name for n in topology.nodes}
    return [(name, "client") for name in sorted(users) if name not in nodes]
