"""Getting a deployment ready to start: validate, refuse if already up, choose ports, make certificates.

Everything that can fail because of the user's input fails here, before any process exists.
"""
import contextlib

from strife.core.errors import Failed
from strife.deployment import certs, credentials, topology as topology_model
from strife.launcher import control, etcd, ports

MAX_SOCKET_PATH = 104  # sun_path is 108 bytes on Linux (104 on some BSDs)


class AlreadyRunning(Failed):
    pass


def prepare(path, force_certs=False, host=None):
    """The resolved topology, written to state/ for the nodes to read. Raises TopologyError,
    AlreadyRunning, etcd.EtcdNotFound or (hosts on this machine without root) Unsupported with a
    message fit for the user.

    `host`: only that host's nodes will run here (`strife up --host NAME` on each machine)."""
    topology = topology_model.load(path)
    layout = topology.layout
    if host is not None and host not in {h.name for h in topology.hosts}:
        raise topology_model.TopologyError([f"--host: {host!r} is not one of the hosts "
                                            f"{', '.join(h.name for h in topology.hosts) or '(the topology has none)'}"])
    if topology.hosts and host is None:  # every host here, each in a network namespace
        from strife.launcher import netns
        netns.require_root()
    if len(str(layout.socket).encode()) > MAX_SOCKET_PATH:
        raise topology_model.TopologyError([
            f"{layout.home}: the directory path is too long for the control socket "
            f"({len(str(layout.socket).encode())} > {MAX_SOCKET_PATH} bytes); move the topology somewhere shorter"])
    if control.ControlClient(layout).is_running():
        raise AlreadyRunning(f"Strife is already up in {layout.home} (see `strife status`; "
                             f"`strife down` stops it)")
    if topology.hosts and host is None:
        topology = netns.place(topology)  # pyright: ignore[reportPossiblyUnbound]
    if topology.of_kind("etcd"):
        etcd.find_binary(topology)
    previous = None
    with contextlib.suppress(Exception):  # only a hint for stable ports; may be missing or stale
        previous = topology_model.load(layout.resolved, home=layout.home)
    resolved, problems = ports.resolve(topology, previous)
    if problems:
        raise topology_model.TopologyError(problems)
    layout.create()
    certs.ensure(resolved, force=force_certs, registered=credentials.registered(resolved))
    credentials.ensure(resolved)
    layout.resolved.write_text(resolved.to_json())
    control.write_placement(layout, resolved)
    layout.faults.unlink(missing_ok=True)  # faults lived in namespaces that are made anew
    return resolved
