"""A node's health (grpc.health.v1) with the disk's say in it: NOT_SERVING, with the reason, while
the node cannot write; SERVING again by itself once it can.

Writes that fail for the disk are reported from wherever they happen, from any thread
(strife/core/storage.py: group commit, the outbox). Every PROBE_EVERY seconds the node also writes and
removes a probe file of PROBE_BYTES in its data directory: that notices a full disk before a
payment fails on it, and it is what says the disk takes writes again (no real write may come
while the node is NOT_SERVING). The reason travels in the Check answer's trailing metadata
(HEALTH_REASON), which the supervisor's probe reads for `strife status` (strife/launcher/health.py).
"""
import asyncio
import logging
import os

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from strife.core import storage
from strife.core.headers import HEALTH_REASON
from strife.core.untrusted import escape

PROBE_EVERY = 1.0
PROBE_BYTES = 64 * 1024  # a write of this size must fit: SQLite's next commit needs some room too
log = logging.getLogger(__name__)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class NodeHealth(HealthServicer):
    """The standard servicer, except that SERVING reads NOT_SERVING while `problem` is set."""

    def __init__(self):
        super().__init__()
        self._wanted = dict(self._server_status)  # what the node says, before the disk's say
        self.problem = None

    async def set(self, service, status):
        self._wanted[service] = status
        await super().set(service, self._effective(status))

    async def set_problem(self, problem):
        """A reason the node cannot serve (None: it can again)."""
        if problem == self.problem:
            return
        if problem:
            log.warning("NOT_SERVING: %s", problem)  # lost when the log's disk is the full one
        else:
            log.info("%s is resolved: the node serves again", self.problem)
        self.problem = problem
        for service, status in self._wanted.items():
            await super().set(service, self._effective(status))

    def _effective(self, status):
        return NOT_SERVING if self.problem and status == SERVING else status

    async def Check(self, request, context):
        problem = self.problem
        if problem:
            value = escape(problem).encode("ascii", "backslashreplace").decode()  # metadata is ASCII
            context.set_trailing_metadata(((HEALTH_REASON, value),))
        return await super().Check(request, context)


class DiskWatch:
    """Turns failed writes and probe writes into NodeHealth's problem."""

    def __init__(self, health, directory, home):
        self.health = health
        self.directory = directory
        self.home = home
        self.failed = {}  # path -> why, for writes that failed since the last good probe
        self._loop = None
        self._task = None

    def start(self):
        self._loop = asyncio.get_running_loop()
        storage.watch(self._reported)
        self._task = asyncio.create_task(self._probe_forever(), name="disk-watch")

    async def stop(self):
        if self._task:
            self._task.cancel()

    def _reported(self, path, why):  # any thread
        assert self._loop is not None, "start() comes first"
        self._loop.call_soon_threadsafe(self._failed, path, why)

    def _failed(self, path, why):
        self.failed[path] = why
        assert self._loop is not None
        self._loop.create_task(self.health.set_problem(self.problem()))

    def problem(self):
        if not self.failed:
            return None
        path, why = next(iter(self.failed.items()))
        return f"{why}: cannot write {self._shown(path)}"

    async def _probe_forever(self):
        while True:
            why = await asyncio.to_thread(self._probe)  # a stalled disk must not stall the loop
            if why:
                self.failed[self.directory] = why
            else:
                self.failed.clear()  # the disk takes a write again: so will the databases
            await self.health.set_problem(self.problem())
            await asyncio.sleep(PROBE_EVERY)

    def _probe(self):
        path = self.directory / ".write-probe"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                left = memoryview(bytes(PROBE_BYTES))
                while left:  # a nearly full disk takes part of a write, then refuses the rest
                    left = left[os.write(fd, left):]
            finally:
                os.close(fd)
                os.unlink(path)
            return None
        except OSError as exc:
            return storage.problem(exc, path) or f"cannot write ({exc.strerror})"

    def _shown(self, path):
        try:
            return str(os.path.relpath(path, self.home))
        except ValueError:
            return str(path)
