"""The supervisor's end of the control socket (the protocol and the client: control.py)."""
import asyncio
import contextlib
import json
import os
import socket
import struct

from strife.launcher.control_wire import READ_TIMEOUT, BadRequest, NoSuchNode, _refusal, validate


def peer_uid(sock):
    """The user id of the process at the other end of a connected Unix socket (from the kernel)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


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
            answer = _refusal("bad-request", f"bad request: {exc}")
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
            return _refusal("refused", f"refused: user id {uid} may not control a supervisor run by "
                                       f"user id {self.uid}")
        if line is None:
            return _refusal("bad-request", f"bad request: no request line within {READ_TIMEOUT:g}s")
        try:
            request = validate(json.loads(line))
        except BadRequest as exc:
            return _refusal("bad-request", f"bad request: {exc}")
        return await self.handlers[request["cmd"]](request)

    def _node(self, request):
        name = request.get("node")
        if name not in self.supervisor.procs:
            known = ", ".join(self.supervisor.procs)
            raise NoSuchNode(f"no node named {name!r} (nodes: {known})")
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
        except NoSuchNode as exc:
            return _refusal("no-such-node", str(exc))
        except ValueError as exc:  # the supervisor's word: not in a state that allows it
            return _refusal("not-now", str(exc))
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
        except NoSuchNode as exc:
            return _refusal("no-such-node", str(exc))
        try:
            healthy = await self.supervisor.restart_node(name, timeout=request.get("timeout") or 60)
        except asyncio.TimeoutError:
            healthy = False
        if not healthy:
            return _refusal("unhealthy", f"{name} did not become healthy")
        return {"ok": True, **self.supervisor.status()}
