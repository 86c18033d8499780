"""The control socket's wire, shared by both sides: one JSON request per connection, one JSON
answer ({"ok": false, "code": ..., "error": ...} on a refusal, CODES), each request's fields
checked before anything is done, and the answer's typed form (Status, NodeStatus). The client is
control.py (one supervisor) and host_control.py (one per host); the server is control_server.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import socket
from pathlib import Path
from typing import Any

from strife.core import errors

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 10.0
MAX_PAUSE = 24 * 3600.0
MAX_RESTART_WAIT = 3600.0


class BadRequest(errors.BadInput, ValueError):
    """A request the supervisor refuses before acting on it."""


class NoSuchNode(errors.BadInput, LookupError):
    """The request names a node the deployment does not have."""


class Refused(errors.Failed):
    """The supervisor would not do it: the node is not in a state that allows it, it did not become
    healthy, or the caller is another user."""


class NotRunning(errors.NotRunning):
    """No supervisor answers on this deployment's socket."""


# An answer's "code" -> the exception a ControlClient raises for it
CODES = {"bad-request": BadRequest, "no-such-node": NoSuchNode, "refused": Refused, "not-now": Refused,
         "unhealthy": Refused}


def _refusal(code, error):
    return {"ok": False, "code": code, "error": error}


def _seconds(value, field, high, optional):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= high:
        raise BadRequest(f"{field}: must be a number of seconds above 0 and at most {high:g}, not {value!r:.40}")
    return float(value)


def _node_name(value):
    if not isinstance(value, str) or not value:
        raise BadRequest(f"node: must be a node name, not {value!r:.40}")
    return value


# cmd -> {field: check(value)} for every field it takes besides "cmd"; any other field is refused
FIELDS = {
    "status": {}, "down": {},
    "restart": {"node": _node_name,
                "timeout": lambda v: _seconds(v, "timeout", MAX_RESTART_WAIT, optional=True)},
    "pause": {"node": _node_name, "seconds": lambda v: _seconds(v, "seconds", MAX_PAUSE, optional=True)},
    "resume": {"node": _node_name},
    "kill": {"node": _node_name},
}
REQUIRED = {"restart": ("node",), "pause": ("node",), "resume": ("node",), "kill": ("node",)}


def validate(request: object) -> dict[str, Any]:
    """The request with its fields checked and normalised; raises BadRequest naming the field."""
    if not isinstance(request, dict):
        raise BadRequest("a request is a JSON object such as {\"cmd\": \"status\"}")
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or cmd not in FIELDS:
        raise BadRequest(f"cmd: unknown command {cmd!r:.40} (commands: {', '.join(FIELDS)})")
    checks = FIELDS[cmd]
    unknown = sorted(str(k) for k in request if k != "cmd" and k not in checks)
    if unknown:
        raise BadRequest(f"{unknown[0]:.40}: not a field of {cmd}")
    for name in REQUIRED.get(cmd, ()):
        if name not in request:
            raise BadRequest(f"{name}: required by {cmd}")
    return {"cmd": cmd, **{name: check(request.get(name)) for name, check in checks.items()}}


def call(path: Path | str, request: dict, timeout: float = 120.0) -> dict[str, Any]:
    """Send one request (a dict) to the supervisor at `path` and return its answer as it came;
    raise NotRunning if nobody answers. ControlClient is the typed way; this is the wire."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(str(path)) from exc
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotRunning(str(path))
    return json.loads(data)


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    """One node as the supervisor sees it (launcher/node.py: NodeProcess.describe)."""
    name: str
    kind: str
    pid: int | None
    state: str
    health: str          # SERVING, NOT_SERVING, UNKNOWN, UNREACHABLE, PAUSED, "-"; "NOT_SERVING: why"
    restarts: int
    uptime: float | None
    address: str
    last_exit: int | None
    host: str | None = None  # with hosts: the host it runs on
    metrics: str | None = None  # host:port of its Prometheus metrics (strife/observe/metrics.py)

    def health_and_reason(self) -> tuple[str, str | None]:
        """('NOT_SERVING', 'disk full: ...') from the health the probe gave; the reason may be None."""
        status, _, reason = self.health.partition(": ")
        return status, reason or None


@dataclasses.dataclass(frozen=True)
class Status:
    """A supervisor's answer: its phase (starting, ready, failed, stopping, stopped) and its nodes."""
    phase: str
    failed: str | None
    pid: int
    topology: str
    nodes: list[NodeStatus]
    supervisors: dict[str, int | None] | None = None  # with hosts: each host's supervisor pid (None: no answer)

    @classmethod
    def of(cls, answer: dict) -> Status:
        return cls(answer["phase"], answer["failed"], answer["pid"], answer["topology"],
                   [NodeStatus(**node) for node in answer["nodes"]], answer.get("supervisors"))

    def node(self, name: str) -> NodeStatus:
        return next(n for n in self.nodes if n.name == name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def shown(self) -> dict:
        """As `strife status --json` shows it: each node's health and the reason for it apart."""
        shown = self.to_dict()
        for row, node in zip(shown["nodes"], self.nodes):
            row["health"], row["health_reason"] = node.health_and_reason()
        return {"running": True, **shown}
