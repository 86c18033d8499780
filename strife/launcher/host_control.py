"""The CLI's side of a deployment with hosts: one supervisor per host, each with its own control
socket (state/supervisor-<host>.sock). A request about a node goes to its host's supervisor;
status and down go to every host, and their answers are merged into one Status."""
import concurrent.futures
import contextlib

from strife.deployment.layout import Layout
from strife.launcher import control_wire as control

LOST = "LOST"  # the state shown for the nodes of a host whose supervisor does not answer


def _one(layout: Layout, host: str, request: dict, timeout: float):
    """The host supervisor's answer, or None when it does not run; a refusal raises."""
    try:
        answer = control.call(layout.host_socket(host), request, timeout)
    except (control.NotRunning, ConnectionError):
        return None
    if not answer.get("ok"):
        raise control.CODES.get(answer.get("code", ""), control.Refused)(answer.get("error") or "refused")
    return answer


def _all(layout, hosts, request, timeout):
    with concurrent.futures.ThreadPoolExecutor(max(1, len(hosts))) as pool:
        futures = {h: pool.submit(_one, layout, h, request, timeout) for h in hosts}
        return {h: f.result() for h, f in futures.items()}


def merge(placement: dict, answers: dict) -> control.Status:
    live = {h: a for h, a in answers.items() if a is not None}
    if not live:
        raise control.NotRunning("no host supervisor answers")
    nodes = []
    for host, names in placement.items():
        if answers.get(host) is not None:
            nodes += [control.NodeStatus(**n) for n in answers[host]["nodes"]]
        else:
            nodes += [control.NodeStatus(name, "-", None, LOST, "-", 0, None, "-", None, host) for name in names]
    phases = [a["phase"] for a in live.values()]
    lost = len(live) < len(answers)
    if "failed" in phases:
        phase = "failed"
    elif lost:
        phase = "partial"  # some host's supervisor does not answer (not started yet, or gone)
    elif all(p == "ready" for p in phases):
        phase = "ready"
    elif all(p == "stopped" for p in phases):
        phase = "stopped"
    elif "stopping" in phases:
        phase = "stopping"
    else:
        phase = "starting"
    failed = next((a["failed"] for a in live.values() if a["failed"]), None)
    first = next(iter(live.values()))
    return control.Status(phase, failed, first["pid"], first["topology"], nodes,
                          {h: (a["pid"] if a else None) for h, a in answers.items()})


def ask(client, request: dict, timeout: float) -> control.Status:
    layout, placement = client.layout, client.placement
    node = request.get("node")
    if node is not None:
        host = next((h for h, names in placement.items() if node in names), None)
        if host is None:
            known = ", ".join(n for names in placement.values() for n in names)
            raise control.NoSuchNode(f"no node named {node!r} (nodes: {known})")
        if _one(layout, host, request, timeout) is None:
            raise control.NotRunning(f"the supervisor of host {host} is not running in {layout.home}")
        request = {"cmd": "status"}
    answers = _all(layout, list(placement), request, timeout)
    try:
        return merge(placement, answers)
    except control.NotRunning:
        raise control.NotRunning(f"Strife is not running in {layout.home} (start it with `strife up -d`)") from None


def remove_network(layout: Layout) -> None:
    """After `down`: the hosts' namespaces, bridge and veths go too (they need root to remove; a
    deployment with hosts on one machine was made by root)."""
    import os

    from strife.launcher import netns
    layout.faults.unlink(missing_ok=True)  # they lived in the namespaces
    if os.geteuid() == 0:
        with contextlib.suppress(FileNotFoundError):
            netns.Network(layout.home).remove()
