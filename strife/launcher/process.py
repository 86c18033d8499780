"""One supervised child: how it is spawned, signalled and reaped. Policy lives in the supervisor."""
import asyncio
import os
import signal
import time

from strife.launcher.states import ALIVE, State, check


class NodeProcess:
    def __init__(self, spec, argv, env=None):
        self.spec = spec
        self.argv = argv
        self.env = env
        self.state = State.STOPPED
        self.proc = None
        self.restarts = 0           # every restart after the first start
        self.failures = 0           # consecutive failed runs; reset once a run was healthy and stable
        self.started_at = None      # monotonic, of the current process
        self.running_since = None   # wall clock, for uptime
        self.health = "-"
        self.last_exit = None

    @property
    def name(self):
        return self.spec.name

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.state in ALIVE else None

    def set_state(self, new):
        check(self.state, new)
        self.state = new

    async def spawn(self, log_path=None):
        """Output goes straight to `log_path` (appended) when given, else to a pipe to read."""
        log = open(log_path, "ab") if log_path else None
        try:
            self.proc = await self._exec(log or asyncio.subprocess.PIPE)
        finally:
            if log:
                log.close()  # the child holds its own descriptor
        self.started_at = time.monotonic()
        self.running_since = time.time()
        return self.proc

    async def _exec(self, output):
        return await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=output,
            stderr=asyncio.subprocess.STDOUT, env=self.env, limit=1 << 20,
            # Its own process group: signals reach the node and its children. No preexec_fn: no
            # Python runs between fork and exec (the child ties its life to ours itself, see
            # strife/lifeline.py), so subprocess uses vfork and no gRPC fork handler ever runs.
            start_new_session=True)

    def signal_group(self, signum):
        if self.proc is None or self.proc.returncode is not None:
            return False
        try:
            os.killpg(self.proc.pid, signum)
            return True
        except ProcessLookupError:
            return False

    async def terminate(self, grace):
        """SIGTERM the group, SIGKILL it after `grace` seconds; returns the exit code."""
        if self.proc is None:
            return None
        self.signal_group(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.signal_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), grace)
        except asyncio.TimeoutError:
            self.signal_group(signal.SIGKILL)
            return await self.proc.wait()

    def uptime(self):
        if self.state not in (State.RUNNING, State.PAUSED) or self.running_since is None:
            return None
        return time.time() - self.running_since

    def describe(self):
        spec = self.spec
        uptime = self.uptime()
        return {"name": spec.name, "kind": spec.kind, "pid": self.pid, "state": self.state.value,
                "health": self.health, "restarts": self.restarts,
                "uptime": round(uptime, 1) if uptime is not None else None,
                "address": spec.address, "last_exit": self.last_exit}
