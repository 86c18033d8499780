"""One node's OS process: how it is spawned, signalled and reaped. Policy lives in the supervisor.

Spawned from the supervisor's event-loop thread: the node's parent-death signal (strife/core/lifeline.py)
is tied to the thread that forked it, so spawning from a worker thread would kill the node when
that thread ends.
"""
import asyncio
import json
import os
import socket


class Child:
    """A spawned node as the supervisor sees it; the tests' fake processes have the same shape."""

    def __init__(self, proc, readiness, drained=None, created=None):
        self.proc = proc
        self.readiness = readiness  # .wait(): returns once the node can serve; .close()
        self._drained = drained     # task copying the node's output, done at its EOF
        self.created = created      # time.time() the process was made, if before it was needed

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    async def wait(self):
        """The exit code (minus the signal number if killed), once all its output is copied."""
        code = await self.proc.wait()
        self.readiness.close()
        if self._drained is not None:
            await asyncio.shield(self._drained)
        return code

    async def ready(self):
        """Returns once the node says it can serve (with the times of its start-up stages, if it
        told them); never, if it dies first."""
        return await self.readiness.wait()

    def signal_group(self, signum):
        if self.proc.returncode is not None:
            return False
        try:
            os.killpg(self.proc.pid, signum)
            return True
        except ProcessLookupError:
            return False


async def spawn(argv, env, log_path=None, pass_fds=()):
    """Output goes straight to `log_path` (appended) when given, else to a pipe (proc.stdout) to read."""
    log = open(log_path, "ab") if log_path else None
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log or asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, limit=1 << 20, pass_fds=pass_fds,
            # Its own process group: signals reach the node and its children. No preexec_fn: no
            # Python runs between fork and exec (the child ties its life to ours itself, see
            # strife/core/lifeline.py), so subprocess uses vfork and no gRPC fork handler ever runs.
            start_new_session=True)
    finally:
        if log:
            log.close()  # the child holds its own descriptor


class Lifeline:
    """Our end of the socket pair a node gets (strife/core/lifeline.py has the other end): we say go
    down it, the node says ready up it."""

    def __init__(self):
        self.ours, self.theirs = socket.socketpair()
        self._reader = self._writer = None

    @property
    def child_fd(self):
        return self.theirs.fileno()

    def spawned(self):
        """Once the child holds its end, ours of it must go: else a dead child would never read as EOF."""
        self.theirs.close()

    async def go(self, **message):
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self.ours)
        self._writer.write(json.dumps(message).encode() + b"\n")

    async def wait(self):
        """The node's stages ({name: time.time()}) once it says it is ready; never, if it dies first."""
        assert self._reader is not None, "wait() comes after go()"
        try:
            line = await self._reader.readline()
        except ConnectionResetError:  # it died with our `go` unread: a death like EOF, seen by wait()
            line = b""
        if not line.endswith(b"\n"):  # EOF: it died first
            await asyncio.Future()
        return json.loads(line)

    def close(self):
        """Hang up: a node still waiting for go then exits; a pending wait() never returns."""
        if self._writer is not None:
            self._writer.close()
        else:
            self.ours.close()
