"""`up -d` as a library call: start the supervisor daemon and wait until every node is healthy."""
import subprocess
import sys
import time

from strife.deployment.layout import Layout
from strife.launcher import control, logs


class StartFailed(Exception):
    """Not every node became healthy; `lines` explain which and why."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = lines


def start(topology, timeout=120.0, progress=lambda text: None):
    """Spawn the daemon for a prepared topology; return its status once all nodes are RUNNING."""
    layout = Layout(topology.home)
    with open(layout.supervisor_log, "ab") as out:  # -P: a strife/ folder in home cannot shadow the package
        daemon = subprocess.Popen([sys.executable, "-P", "-m", "strife.launcher.daemon", "--home", str(layout.home)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=layout.home)
    begun, shown = time.monotonic(), {}
    progress(f"starting {len(topology.nodes)} nodes from {topology.path} (supervisor pid {daemon.pid})")
    while True:
        if daemon.poll() is not None:
            raise StartFailed([f"the supervisor exited with {daemon.returncode}; last lines of "
                               f"{layout.supervisor_log}:"] + ["  " + line for line in logs.tail(layout.supervisor_log, 20)])
        try:
            answer = control.call(layout.socket, {"cmd": "status"}, timeout=5)
        except (control.NotRunning, OSError):
            answer = None
        if answer:
            for node in answer["nodes"]:
                key = (node["state"], node["restarts"])
                if node["state"] != "STOPPED" and shown.get(node["name"]) != key:
                    shown[node["name"]] = key
                    progress(f"  {node['name']:<10} {node['state']:<9} pid {node['pid'] or '-':<7} "
                             f"restarts {node['restarts']}")
            if answer["phase"] == "ready":
                answer["elapsed"] = time.monotonic() - begun
                return answer
            if answer["phase"] == "failed":
                name = answer["failed"]
                node = next(n for n in answer["nodes"] if n["name"] == name)
                raise StartFailed(
                    [f"{name} failed to start: {node['state']} after {node['restarts']} restarts "
                     f"(last exit {node['last_exit']}); last lines of logs/{name}.log:"]
                    + ["  " + line for line in logs.tail(layout.log(name), 20)]
                    + ["the other nodes stay up for inspection; `strife down` stops them"])
        if time.monotonic() - begun > timeout:
            raise StartFailed([f"not all nodes healthy after {timeout:g}s; see `strife status` and `strife logs`"])
        time.sleep(0.05)  # a status call over the control socket costs well under a millisecond
