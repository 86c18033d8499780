"""Fake processes and a fake clock for the supervisor's policy: nothing is started, time is virtual."""
import asyncio
import heapq
import itertools
import pathlib
import signal
import textwrap

import yaml

from strife.deployment import topology as topology_model
from strife.launcher.supervisor import Supervisor

TOPOLOGY = """
settings:
  backoff: 200ms
  max_restarts: 3
  start_timeout: 5s
  stop_grace: 2s
etcd:
  members: 1
banks:
  bank1: {}
  bank2: {}
gateway: {}
clients:
  alice: {bank: bank1, balance: "100.00"}
  bob: {bank: bank2, balance: "50.00", restart: always}
"""


async def settle(rounds=200):
    """Let every runnable task run until nothing is left to do (no I/O here, only callbacks): up to
    `rounds` turns of the loop, fewer once its queue of ready callbacks is empty when this task
    resumes (then nothing else can run: time is virtual). The property test settles over a million
    times; always taking all 200 turns was nearly all of its CPU."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # CPython's event loop; elsewhere, every round
    for _ in range(rounds):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return


class FakeClock:
    """Virtual time in whole milliseconds (exact: no float drift between a sleep and an advance)."""

    def __init__(self):
        self.ms = 0
        self._sleepers = []  # (deadline ms, seq, future)
        self._seq = itertools.count()

    def now(self):
        return self.ms / 1000

    def wall(self):
        return 1_700_000_000.0 + self.now()

    async def sleep(self, seconds):
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.ms + round(seconds * 1000), next(self._seq), future))
        await future

    async def advance(self, seconds):
        """Move time forward, waking every sleeper whose deadline passes, in order."""
        target = self.ms + round(seconds * 1000)
        while True:
            await settle()
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, future = heapq.heappop(self._sleepers)
            self.ms = max(self.ms, deadline)
            future.set_result(None)
        self.ms = target
        await settle()


class FakeChild:
    """A process that exits when told to, or as a real node does on a signal."""
    _pids = itertools.count(10_000)
    created = None  # made when needed, never ahead of time

    def __init__(self, name, obeys_sigterm=True):
        self.name = name
        self.pid = next(self._pids)
        self.returncode = None
        self.stopped = False            # SIGSTOPped
        self.pending_term = False       # SIGTERM waiting for SIGCONT
        self.obeys_sigterm = obeys_sigterm
        self.signals = []
        self._exited = asyncio.Event()
        self._ready = asyncio.Event()

    @property
    def alive(self):
        return self.returncode is None

    async def wait(self):
        await self._exited.wait()
        return self.returncode

    async def ready(self):
        await self._ready.wait()

    def become_ready(self):
        if self.alive:
            self._ready.set()

    def exit(self, code):
        if self.alive:
            self.returncode = code
            self._exited.set()

    def signal_group(self, signum):
        if not self.alive:
            return False
        self.signals.append(signum)
        if signum == signal.SIGKILL:
            self.exit(-signal.SIGKILL)
        elif signum == signal.SIGSTOP:
            self.stopped = True
        elif signum == signal.SIGCONT:
            self.stopped = False
            if self.pending_term:
                self._terminated()
        elif signum == signal.SIGTERM:
            if self.stopped:
                self.pending_term = True
            else:
                self._terminated()
        return True

    def _terminated(self):
        if self.obeys_sigterm:
            self.exit(0)


class FakeSpawner:
    def __init__(self, ready_at_once=True):
        self.ready_at_once = ready_at_once
        self.obeys_sigterm = True
        self.children = {}   # name -> [FakeChild, ...] in spawn order
        self.spawned = []    # names, in spawn order
        self.etcd_secured_after = None  # how many spawns had happened when etcd was secured
        self.prepared, self.discarded = [], []
        self.all_started_calls = 0
        self.closed = False
        self.unstartable = set()  # names whose spawn fails as a real one can (OSError, before any await)
        self.failed_spawns = {}   # name -> how many spawns failed

    async def prepare(self, spec):
        self.prepared.append(spec.name)

    async def discard(self, spec):
        self.discarded.append(spec.name)

    def all_started(self):
        self.all_started_calls += 1

    async def spawn(self, spec):
        if spec.name in self.unstartable:
            self.failed_spawns[spec.name] = failed = self.failed_spawns.get(spec.name, 0) + 1
            if failed > 50:  # a supervisor retrying without a pause never yields: stop it here, visibly
                raise RuntimeError(f"{spec.name}: spawned {failed} times without a pause")
            raise OSError(f"cannot start {spec.name}")
        child = FakeChild(spec.name, self.obeys_sigterm)
        self.children.setdefault(spec.name, []).append(child)
        self.spawned.append(spec.name)
        if self.ready_at_once:
            child.become_ready()
        return child

    def current(self, name):
        return self.children[name][-1]

    def alive(self, name):
        return [c for c in self.children.get(name, []) if c.alive]

    async def probe(self, spec):
        return "SERVING"

    async def etcd_ready(self):
        self.etcd_secured_after = len(self.spawned)

    async def close(self):
        self.closed = True


class SilentPrinter:
    def __init__(self):
        self.lines = []

    def line(self, name, text):
        self.lines.append(f"{name} | {text}")


def topology(text=TOPOLOGY):
    return topology_model.parse(yaml.safe_load(textwrap.dedent(text)), pathlib.Path("/nowhere/topology.yaml"))


def supervisor(text=TOPOLOGY, **spawner_options):
    """(supervisor, spawner, clock) over fakes; run it inside an event loop."""
    spawner, clock = FakeSpawner(**spawner_options), FakeClock()
    return Supervisor(topology(text), spawner, SilentPrinter(), clock), spawner, clock
