"""Demo credentials: a password per topology client, generated once, kept in state/credentials.json
(0600). The gateway hashes them into its user directory on first start; the client CLI reads them."""
import json
import os
import secrets

from strife.deployment.layout import Layout


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


def registered(topology):
    """(name, role) of users registered at run time (not in the topology) who have a password here."""
    nodes = {n.name for n in topology.nodes}
    return [(name, "client") for name in sorted(load(topology.home)) if name not in nodes]
