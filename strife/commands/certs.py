"""`strife certs`: make what is missing, renew everything (only while stopped), or re-issue one identity."""
from strife.commands import OK, topology_path
from strife.core.errors import BadInput
from strife.deployment.identities import CA_FILE, INFRA, USERS
from strife.launcher.control import ControlClient

SHOWN = 12  # names listed before "and N more" (bench alone registers 64 users)


def _topology(args):
    from strife.deployment import topology as topology_model
    try:
        return topology_model.load(topology_path(args))
    except topology_model.TopologyError as exc:
        raise BadInput("invalid topology:\n" + "\n".join(f"  {line}" for line in exc.problems)) from None


def _names(names):
    names = list(names)
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def run(args):
    from strife.deployment import certs, credentials
    topology = _topology(args)
    layout = topology.layout
    registered = credentials.registered(topology)
    if args.force and ControlClient(layout).is_running():
        # New authorities under running nodes: each still holds the old ones, so every handshake
        # between a node that restarted and one that did not fails. Renewal happens while stopped.
        raise BadInput(f"Strife is running in {layout.home}: renewing the authorities now would make its nodes "
                       f"refuse each other. Run `strife down`, `strife certs --force`, then `strife up -d` "
                       f"(or re-issue one identity with `strife certs --reissue NAME`, which is safe while "
                       f"running). Nothing was changed")
    if args.reissue:
        return _reissue(topology, layout, args.reissue, registered)
    issued = certs.ensure(topology, force=args.force, registered=registered)
    if not issued:
        print(f"certificates in {layout.certs}: all present and valid")
        return OK
    renewed = [CA_FILE[d] for d in (INFRA, USERS) if CA_FILE[d] in issued]
    users = {name for name, _ in registered}
    identities = [n for n in issued if n not in renewed and n not in users]
    late = [n for n in issued if n in users]
    parts = []
    if renewed:
        parts.append(f"new authorities {', '.join(renewed)}")
    if identities:
        parts.append(f"issued {_names(identities)}")
    if late:
        parts.append(f"re-issued {len(late)} user(s) registered at run time ({_names(late)})")
    print(f"certificates in {layout.certs}: " + "; ".join(parts))
    return OK


def _reissue(topology, layout, name, registered):
    from strife.deployment import certs
    if not all(layout.ca_cert(d).exists() and layout.ca_key(d).exists() for d in (INFRA, USERS)):
        raise BadInput(f"no authorities in {layout.certs} yet: run `strife certs` (or `strife up`) first")
    known = [n for n, _, _ in certs.identities(topology, registered)]
    if name not in known:
        raise BadInput(f"no identity named {name!r} here (identities: {_names(known)}; a user must be "
                       f"registered with a password in state/credentials.json)")
    role = certs.reissue(topology, name, registered)
    runs = name in {n.name for n in topology.nodes}  # a node (a topology client too) loads it at its start
    print(f"re-issued {name} ({role}): {layout.key(name)} and {layout.cert(name)}; "
          + (f"node {name} uses it from its next start (while it runs, its old one stays valid)" if runs
             else "every command from now on uses it"))
    return OK
