"""The control socket: how `strife status|down|restart|chaos` reach a running supervisor.

One JSON request per connection, one JSON answer: {"cmd": "status"} -> {"ok": true, ...}, or
{"ok": false, "code": "no-such-node", "error": "..."} (CODES). Commands use ControlClient, which
turns answers into Status and refusals into the exceptions of strife/core/errors.py.
A Unix socket under state/ (0600), and the kernel's word on who connected (SO_PEERCRED): only
the user running the supervisor can steer it. Every field of a request is checked before anything
is done, so a bad one changes nothing (no signal sent, no node left paused). The server is
control_server.py; what both sides share is control_wire.py; this module is the client.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import time

from strife.deployment.layout import Layout
# the wire's names, where commands and tests find them beside the client
from strife.launcher.control_wire import (  # noqa: F401
    CODES, BadRequest, NoSuchNode, NodeStatus, NotRunning, Refused, Status, call, validate)



class ControlClient:
    """A deployment's supervisor, asked through its control socket. Every method returns the
    Status after the act, or raises: NotRunning, BadRequest, NoSuchNode or Refused."""

    def __init__(self, layout: Layout, timeout: float = 120.0):
        self.layout = layout
        self.timeout = timeout
        self.placement = read_placement(layout)  # with hosts: {host: [node name, ...]}

    def _ask(self, request: dict, timeout: float | None = None) -> Status:
        if self.placement:
            from strife.launcher import host_control  # one supervisor per host: ask the right ones
            return host_control.ask(self, request, timeout or self.timeout)
        try:
            answer = call(self.layout.socket, request, timeout or self.timeout)
        except NotRunning:
            raise NotRunning(f"Strife is not running in {self.layout.home} (start it with `strife up -d`)") from None
        if not answer.get("ok"):
            raise CODES.get(answer.get("code", ""), Refused)(answer.get("error") or "refused")
        return Status.of(answer)

    def is_running(self) -> bool:
        """Whether a supervisor answers (with hosts: the supervisor of any host)."""
        sockets = [self.layout.host_socket(h) for h in self.placement] or [self.layout.socket]
        for path in sockets:
            try:
                call(path, {"cmd": "status"}, timeout=5)
                return True
            except (NotRunning, OSError, ValueError):
                pass
        return False

    def status(self, timeout: float = 10.0) -> Status:
        return self._ask({"cmd": "status"}, timeout)

    def down(self, timeout: float = 300.0) -> Status:
        """Stop every node, and wait until the supervisor process itself has ended."""
        status = self._ask({"cmd": "down"}, timeout)
        for pid in (status.supervisors or {}).values() if status.supervisors else [status.pid]:
            if pid:
                wait_ended(pid)
        if self.placement:
            from strife.launcher import host_control
            host_control.remove_network(self.layout)
        return status

    def restart(self, node: str, timeout: float | None = None) -> Status:
        return self._ask({"cmd": "restart", "node": node, **({"timeout": timeout} if timeout else {})})

    def pause(self, node: str, seconds: float | None = None) -> Status:
        return self._ask({"cmd": "pause", "node": node, "seconds": seconds})

    def resume(self, node: str) -> Status:
        return self._ask({"cmd": "resume", "node": node})

    def kill(self, node: str) -> Status:
        return self._ask({"cmd": "kill", "node": node})


def read_placement(layout: Layout) -> dict[str, list[str]]:
    """{host: [node names]} of a deployment started with hosts (state/hosts.json), else {}."""
    try:
        return json.loads(layout.placement.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_placement(layout: Layout, topology) -> None:
    """Written at `up`: where the CLI finds each host's supervisor; removed for a topology without hosts."""
    if topology.hosts:
        layout.placement.write_text(json.dumps({h.name: [n.name for n in topology.on_host(h.name)]
                                                for h in topology.hosts}))
    else:
        layout.placement.unlink(missing_ok=True)


def wait_ended(pid: int, timeout: float = 30.0) -> bool:
    """Whether process `pid` ended within `timeout` seconds; reaped, if it is our child (`strife
    bench` starts its own). Ended means exited, reaped or not: a detached supervisor's parent is
    init, which may reap it seconds later (some containers' init does), and `down` is done when
    the supervisor is. A pidfd is readable from the moment its process exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):  # a kernel without pidfds (before 5.3), or a Python without pidfd_open
        return _looked_ended(pid, timeout)
    try:
        poller = select.poll()  # not select(): a descriptor above 1023 is fine
        poller.register(fd, select.POLLIN)
        ended = bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)
    if ended:
        with contextlib.suppress(ChildProcessError):  # not ours: its parent reaps it
            os.waitpid(pid, os.WNOHANG)
    return ended


def _looked_ended(pid: int, timeout: float) -> bool:
    """wait_ended without a pidfd: a look every 20 ms, a zombie counted as ended."""
    import psutil  # here: only this fallback needs it
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
