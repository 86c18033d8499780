"""The control socket: how `strife status|down|restart|chaos` reach a running supervisor.

One JSON request per connection, one JSON answer: {"cmd": "status"} -> {"ok": true, ...}.
A Unix socket under state/ (0600), and the kernel's word on who connected (SO_PEERCRED): only
the user running the supervisor can steer it. Every field of a request is checked before anything
is done, so a bad one changes nothing (no signal sent, no node left paused).
"""
import asyncio
import contextlib
import json
import math
import os
import socket
import struct

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 10.0
MAX_PAUSE = 24 * 3600.0
MAX_RESTART_WAIT = 3600.0


class BadRequest(ValueError):
    """A request the supervisor refuses before acting on it."""


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


def validate(request):
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


def peer_uid(sock):
    """The user id of the process at the other end of a connected Unix socket (from the kernel)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class NotRunning(Exception):
    """No supervisor answers on this deployment's socket."""


class ControlServer:
    def __init__(self, supervisor, path, uid=None):
        self.supervisor = supervisor
        self.path = path
        self.uid = os.getuid() if uid is None else uid  # the only user allowed to steer
        self._server = None
        self.handlers = {"status": self._status, "down": self._down, "restart": self._restart,
                         "pause": self._pause, "resume": self._resume, "kill": self._kill}

    async def start(self):
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: `up` checked that nothing answers on it
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)

    async def close(self):
        if self._server:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader, writer):
        try:
            answer = await self._answer(reader, writer)
        except (ValueError, AttributeError) as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            writer.close()

    async def _answer(self, reader, writer):
        # The line is read (bounded in size and time) before any answer, even a refusal, so that
        # the caller is not cut off while it is still sending; nothing in it is acted upon unless
        # the peer is the supervisor's user.
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        except asyncio.TimeoutError:
            line = None
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid != self.uid:
            return {"ok": False, "error": f"refused: user id {uid} may not control a supervisor run by "
                                          f"user id {self.uid}"}
        if line is None:
            return {"ok": False, "error": f"bad request: no request line within {READ_TIMEOUT:g}s"}
        try:
            request = validate(json.loads(line))
        except BadRequest as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        return await self.handlers[request["cmd"]](request)

    def _node(self, request):
        name = request.get("node")
        if name not in self.supervisor.procs:
            known = ", ".join(self.supervisor.procs)
            raise LookupError(f"no node named {name!r} (nodes: {known})")
        return name

    async def _status(self, request):
        return {"ok": True, **self.supervisor.status()}

    async def _down(self, request):
        self.supervisor.request_stop()
        await self.supervisor.wait_stopped()
        return {"ok": True, **self.supervisor.status()}

    async def _chaos(self, request, action):
        try:
            name = self._node(request)
            await action(name)
        except (LookupError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, **self.supervisor.status()}

    async def _pause(self, request):
        return await self._chaos(request, lambda name: self.supervisor.pause(name, request.get("seconds")))

    async def _resume(self, request):
        return await self._chaos(request, self.supervisor.resume)

    async def _kill(self, request):
        return await self._chaos(request, self.supervisor.kill)

    async def _restart(self, request):
        try:
            name = self._node(request)
        except LookupError as exc:
            return {"ok": False, "error": str(exc)}
        try:
            healthy = await self.supervisor.restart_node(name, timeout=request.get("timeout") or 60)
        except asyncio.TimeoutError:
            healthy = False
        return {"ok": healthy, "error": None if healthy else f"{name} did not become healthy",
                **self.supervisor.status()}


def call(path, request, timeout=120.0):
    """Send one request to the supervisor at `path`; raise NotRunning if nobody answers."""
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


def is_running(path):
    try:
        call(path, {"cmd": "status"}, timeout=5)
        return True
    except (NotRunning, OSError, ValueError):
        return False
