"""`up -d` as a library call: start the supervisor daemon and wait until every node is healthy."""
import dataclasses
import subprocess
import sys
import time

from strife.core.errors import Failed
from strife.launcher import control, exits, logs


class StartFailed(Failed):
    """Not every node became healthy; `lines` explain which and why."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = lines


def _daemon(layout, log, prefix=(), host=None):
    with open(log, "ab") as out:  # -P: a strife/ folder in home cannot shadow the package
        return subprocess.Popen([*prefix, sys.executable, "-P", "-m", "strife.launcher.daemon",
                                 "--home", str(layout.home), *(["--host", host] if host else [])],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=layout.home)


def start_all(topology, timeout=120.0, progress=lambda text: None, host=None):
    """Start a prepared topology: one supervisor; with hosts, one per host, each in its network
    namespace (made here, leftovers removed first), or only `host`'s on this machine."""
    if not topology.hosts:
        return start(topology, timeout, progress)
    network = None
    if host is None:
        from strife.launcher import netns
        network = netns.Network(topology.home, topology.hosts)
        network.create()
        progress(f"hosts: {', '.join(f'{h.name} {h.address}' for h in topology.hosts)} (network namespaces "
                 f"{network.namespace('*')}, bridge {network.bridge})")
    hosts = [host] if host else [h.name for h in topology.hosts]
    return start(topology, timeout, progress, hosts=hosts, network=network)


def start(topology, timeout=120.0, progress=lambda text: None, hosts=None, network=None):
    """Spawn the daemon for a prepared topology; (its Status, seconds it took) once all nodes are RUNNING.

    `hosts`: one daemon per host named, each inside its host's namespace when `network` is given
    (netns.Network), else on this machine (`strife up --host NAME`)."""
    layout = topology.layout
    supervisor = control.ControlClient(layout)
    if hosts:
        daemons = {layout.host_supervisor_log(h): _daemon(layout, layout.host_supervisor_log(h),
                                                          network.exec_prefix(h) if network else (), h)
                   for h in hosts}
    else:
        daemons = {layout.supervisor_log: _daemon(layout, layout.supervisor_log)}
    begun, shown = time.monotonic(), {}
    pids = ", ".join(str(d.pid) for d in daemons.values())
    progress(f"starting {len(topology.nodes)} nodes from {topology.path} (supervisor pid {pids})")
    while True:
        for log, daemon in daemons.items():
            if daemon.poll() is not None:
                raise StartFailed([f"the supervisor exited with {daemon.returncode}; last lines of "
                                   f"{log}:"] + ["  " + line for line in logs.tail(log, 20)])
        try:
            status = supervisor.status(timeout=5)
        except (control.NotRunning, OSError):
            status = None
        if status:
            for node in status.nodes:
                if hosts and node.host not in hosts:
                    continue  # `up --host NAME`: the other hosts are someone else's
                key = (node.state, node.restarts)
                if node.state not in ("STOPPED", "LOST") and shown.get(node.name) != key:
                    shown[node.name] = key
                    progress(f"  {node.name:<10} {node.state:<9} pid {node.pid or '-':<7} restarts {node.restarts}")
            phase = status.phase
            if hosts and network is None:  # `up --host NAME`: only this machine's nodes count
                mine = [n for n in status.nodes if n.host in hosts]
                stuck = next((n.name for n in mine if n.state in ("FATAL", "EXITED")), None)
                phase = "failed" if stuck else "ready" if all(n.state == "RUNNING" for n in mine) else phase
                status = dataclasses.replace(status, failed=stuck or status.failed)
            if phase == "ready":
                return status, time.monotonic() - begun
            if phase == "failed":
                name = status.failed or ""
                node = status.node(name)
                raise StartFailed(_failed_start(layout, node))
        if time.monotonic() - begun > timeout:
            raise StartFailed([f"not all nodes healthy after {timeout:g}s; see `strife status` and `strife logs`"])
        time.sleep(0.05)  # a status call over the control socket costs well under a millisecond


def _failed_start(layout, node):
    """Which node, how it ended and what it said: its log's tail, else the supervisor's lines on it."""
    why = exits.meaning(node.last_exit)
    lines = [f"{node.name} failed to start: {node.state} after {node.restarts} restarts "
             f"(last exit {node.last_exit}{': ' + why if why else ''})"]
    tail = logs.tail(layout.log(node.name), 20)
    if tail:
        lines += [f"last lines of logs/{node.name}.log:"] + ["  " + line for line in tail]
    else:
        said = [line for line in logs.tail(layout.supervisor_log, 200) if f" {node.name} " in line][-10:]
        lines += [f"logs/{node.name}.log is empty; the supervisor's log on it (`strife logs supervisor`):"]
        lines += ["  " + line for line in said]
    return lines + ["the other nodes stay up for inspection; `strife down` stops them"]
