"""One node's OS process: how it is spawned, signalled and reaped. Policy lives in the supervisor.

Spawned from the supervisor's event-loop thread: the node's parent-death signal (strife/lifeline.py)
is tied to the thread that forked it, so spawning from a worker thread would kill the node when
that thread ends.
"""
import asyncio
import os


class Child:
    """A spawned node as the supervisor sees it; the tests' fake processes have the same shape."""

    def __init__(self, proc, until_ready, drained=None):
        self.proc = proc
        self._until_ready = until_ready  # coroutine function: returns once the node can serve
        self._drained = drained          # task copying the node's output, done at its EOF

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    async def wait(self):
        """The exit code (minus the signal number if killed), once all its output is copied."""
        code = await self.proc.wait()
        if self._drained is not None:
            await asyncio.shield(self._drained)
        return code

    async def ready(self):
        """Returns once the node says it can serve; never, if it dies first."""
        await self._until_ready()

    def signal_group(self, signum):
        if self.proc.returncode is not None:
            return False
        try:
            os.killpg(self.proc.pid, signum)
            return True
        except ProcessLookupError:
            return False


async def spawn(argv, env, log_path=None):
    """Output goes straight to `log_path` (appended) when given, else to a pipe (proc.stdout) to read."""
    log = open(log_path, "ab") if log_path else None
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log or asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, limit=1 << 20,
            # Its own process group: signals reach the node and its children. No preexec_fn: no
            # Python runs between fork and exec (the child ties its life to ours itself, see
            # strife/lifeline.py), so subprocess uses vfork and no gRPC fork handler ever runs.
            start_new_session=True)
    finally:
        if log:
            log.close()  # the child holds its own descriptor
