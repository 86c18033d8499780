"""The control socket: how `strife status|down|restart|chaos` reach a running supervisor.

One JSON request per connection, one JSON answer: {"cmd": "status"} -> {"ok": true, ...}.
A Unix socket under state/, so only users who can read the deployment can steer it.
"""
import asyncio
import contextlib
import json
import socket

MAX_REQUEST = 64 * 1024


class NotRunning(Exception):
    """No supervisor answers on this deployment's socket."""


class ControlServer:
    def __init__(self, supervisor, path):
        self.supervisor = supervisor
        self.path = path
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
            request = json.loads(await reader.readline())
            handler = self.handlers.get(request.get("cmd"))
            if handler is None:
                answer = {"ok": False, "error": f"unknown command {request.get('cmd')!r}"}
            else:
                answer = await handler(request)
        except (ValueError, AttributeError) as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            writer.close()

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
            healthy = await self.supervisor.restart_node(name, timeout=request.get("timeout", 60))
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
