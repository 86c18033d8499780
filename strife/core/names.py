"""The one rule for names of users and nodes, checked before any path is built from a name.

A name becomes file names (certs/<name>.pem, logs/<name>.log, state/<name>/) and a certificate's
subject, so it may not be one the deployment already uses for something else: a node, the
operator, an etcd member, a certificate authority, or a file kept under certs/, state/ or logs/.
"""
import re

from strife.core.untrusted import shown

NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TXN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

RESERVED = frozenset({
    "operator", "supervisor", "strife",                 # the launcher's identities and its lines
    "root",                                             # etcd's superuser
    "ca", "infra-ca", "users-ca", "jwt", "etcd-jwt",    # authorities and signing keys under certs/
    "etcd", *(f"etcd{i}" for i in range(1, 8)),         # etcd members, whatever the cluster size
    "gateway",
    "credentials",                                      # state/credentials.json
})


def problem(name, nodes=()):
    """Why `name` cannot be a user's (or a node's) name, or None when it can.

    `nodes`: names the deployment's nodes already hold (banks, gateway, etcd members).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return (f"{shown(name)} is not a usable name: 1 to 32 lower-case letters, digits, - and _, "
                f"starting with a letter")
    if name in RESERVED:
        return f"{shown(name)} is reserved (a node, the operator, etcd, a CA or a file of the deployment)"
    if name in nodes:
        return f"{shown(name)} is the name of a node of this deployment"
    return None


def node_names(topology):
    """Names held by the nodes of a topology that are not users (clients are users)."""
    return frozenset(n.name for n in topology.nodes if n.kind != "client")


def txn_id_problem(txn_id):
    if not isinstance(txn_id, str) or not TXN_ID.fullmatch(txn_id):
        return "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (a UUID is best)"
    return None
