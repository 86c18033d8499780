"""The supervisor: starts each of a topology's nodes once what it needs is ready, watches their
health, restarts what dies (at once if it had been ready, else after an exponential backoff, up to
a limit of failures in a row; at once and uncounted when the operator killed it), and stops
everything in reverse.

Policy only: processes come from a spawner and time from a clock (spawner.build wires the real
ones), so every path here runs in tests with fake processes in virtual time.
"""
import asyncio
import os
import signal

from strife.core import tasks
from strife.deployment.topology import KINDS, NodeKind, RestartPolicy
from strife.launcher import exits
from strife.launcher.clock import Clock
from strife.launcher.node import NodeProcess
from strife.launcher.printer import Printer
from strife.launcher.states import ALIVE, State

STABLE_AFTER = 10.0      # a run healthy this long resets the consecutive-failure count
MAX_BACKOFF = 30.0
PROBE_INTERVAL = 1.0     # health of RUNNING nodes
KILL_SEEN_WITHIN = 5.0   # seconds a kill's answer waits for the death to be seen (SIGKILL is at once, but
                         # a process in uninterruptible sleep dies when its I/O ends)
SUPERVISOR = "strife"    # the name the supervisor's own lines carry
# What each kind needs ready before it starts. Banks and the gateway use etcd (secured first); the
# gateway reads the bank list at start, so it comes after the banks. A client only talks to the
# gateway, and retries: it needs nothing to start.
NEEDS = {"etcd": (), "bank": ("etcd",), "gateway": ("etcd", "bank"), "client": ()}


class _StartFailed(Exception):
    def __init__(self, proc):
        super().__init__(proc.name)
        self.proc = proc


class Supervisor:
    def __init__(self, topology, spawner, printer=None, clock=None, host=None):
        self.topology = topology
        self.settings = topology.settings
        self.spawner = spawner
        self.printer = printer or Printer()
        self.clock = clock or Clock()
        self.host = host  # with hosts: this supervisor runs only the nodes of this host
        nodes = topology.on_host(host) if host else topology.nodes
        self.procs = {n.name: NodeProcess(n) for n in nodes}
        # kinds its nodes need that run only on other hosts: waited for through etcd, not started
        local = {n.kind for n in nodes}
        self.remote_needs = {k for kind in local for k in NEEDS[kind]} - local if host else set()
        self.phase = "starting"   # starting -> ready | failed -> stopping -> stopped
        self.failed = None        # name of the node that kept startup from completing
        self._changed = asyncio.Event()  # set and replaced at every change of state
        self._tasks = {}
        self._locks = {name: asyncio.Lock() for name in self.procs}  # one stop/restart at a time per node
        self._monitor = None
        self._stop_requested = asyncio.Event()
        self._timers = set()  # pauses that end by themselves

    # ---- public API (also what the control socket calls) ----

    async def start(self):
        """Start every node as soon as the nodes it needs are ready (NEEDS). True when all are."""
        self.event(f"starting {len(self.procs)} nodes from {self.topology.path.name}")
        self._monitor = asyncio.create_task(self._monitor_health())
        begun = self.clock.now()
        for proc in self.procs.values():  # processes first, all at once: they import while etcd starts
            await self.spawner.prepare(proc.spec)
        ready = {kind: asyncio.Event() for kind in KINDS}
        failed = None
        try:
            async with asyncio.TaskGroup() as group:
                for kind in KINDS:
                    group.create_task(self._start_kind(kind, ready))
        except* _StartFailed as failure:
            failed = next(e.proc for e in failure.exceptions if isinstance(e, _StartFailed))
        if self.phase != "starting":  # stopped meanwhile
            return False
        if failed:
            await self._start_failed(failed)
            return False
        self.phase = "ready"
        self.event(f"all {len(self.procs)} nodes healthy in {self.clock.now() - begun:.2f}s")
        self._notify()
        self.spawner.all_started()
        return True

    async def _start_kind(self, kind, ready):
        for needed in NEEDS[kind]:
            await ready[needed].wait()
        group = [p for p in self.procs.values() if p.spec.kind == kind]
        if not group and kind in self.remote_needs:
            begun = self.clock.now()
            self.event(f"waiting for the {kind} nodes of other hosts")
            await self.spawner.remote_ready(kind)
            self.event(f"{kind} of other hosts ready after {self.clock.now() - begun:.2f}s")
        for proc in group:
            self._launch(proc)
        failed = await self._wait_group(group)
        if not failed and kind == NodeKind.ETCD and group:
            failed = await self._secure_etcd(group)
        if failed:
            raise _StartFailed(failed)
        ready[kind].set()

    async def _start_failed(self, failed):
        self.phase, self.failed = "failed", failed.name
        waiting = [p for p in self.procs.values() if p.state is State.STOPPED]
        for proc in waiting:
            await self.spawner.discard(proc.spec)
        self.event(f"{failed.name} is {failed.state.value}; not starting "
                   f"{', '.join(p.name for p in waiting) or 'anything else'}")
        self._notify()

    async def stop(self):
        """Stop everything in reverse start order: SIGTERM, then SIGKILL after the grace period."""
        if self.phase in ("stopping", "stopped"):
            await self.wait_stopped()
            return
        self.phase = "stopping"
        self.event("stopping")
        await tasks.cancel(self._monitor)
        for kind in reversed(KINDS):
            await asyncio.gather(*(self.stop_node(p.name) for p in self.procs.values() if p.spec.kind == kind))
        await self.spawner.close()
        self.phase = "stopped"
        self.event("stopped")
        self._notify()

    async def wait_stopped(self):
        await self._until(lambda: self.phase == "stopped")

    def request_stop(self):
        self._stop_requested.set()

    async def run(self):
        """Foreground: start, then stay until asked to stop (signal or control socket), even mid-start."""
        starting = asyncio.create_task(self.start())
        await self._stop_requested.wait()
        await tasks.cancel(starting)
        await self.stop()

    async def stop_node(self, name):
        proc = self.procs[name]
        async with self._locks[name]:
            task = self._tasks.pop(name, None)
            if proc.state in ALIVE:
                if proc.state is not State.STOPPING:
                    self._set(proc, State.STOPPING)
                code = await self._terminate(proc)
                if task:
                    await task  # sees STOPPING and returns without restarting
                    code = proc.last_exit
                self.event(f"{name} stopped{exits.after_stop(code)}")
            else:  # waiting out a backoff, or its life is over: nothing to signal
                await tasks.cancel(task)
            if proc.state is not State.STOPPED:
                self._set(proc, State.STOPPED)
            proc.health = "-"

    async def restart_node(self, name, timeout=None):
        """Stop one node and start it again; True once it is healthy."""
        proc = self.procs[name]
        await self.stop_node(name)
        async with self._locks[name]:
            if proc.state is State.STOPPED and self.phase not in ("stopping", "stopped"):
                proc.failures = 0
                proc.restarts += 1
                self._launch(proc)
        return await self._wait_group([proc], timeout) is None

    async def pause(self, name, seconds=None):
        """SIGSTOP the node's process group; with `seconds`, SIGCONT it again by itself."""
        proc = self.procs[name]
        if proc.state is not State.RUNNING:
            raise ValueError(f"{name} is {proc.state.value}; only a RUNNING node can be paused")
        proc.signal(signal.SIGSTOP)
        proc.health = "PAUSED"
        self._set(proc, State.PAUSED)
        self.event(f"{name} paused" + (f" for {seconds:g}s" if seconds else ""))
        if seconds:
            timer = asyncio.create_task(self._resume_later(proc, proc.child, seconds))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)

    async def _resume_later(self, proc, child, seconds):
        await self.clock.sleep(seconds)
        if proc.state is State.PAUSED and proc.child is child:
            await self.resume(proc.name)

    async def resume(self, name):
        proc = self.procs[name]
        if proc.state is not State.PAUSED:
            raise ValueError(f"{name} is {proc.state.value}, not PAUSED")
        proc.signal(signal.SIGCONT)
        self._set(proc, State.RUNNING)
        self.event(f"{name} resumed")

    async def kill(self, name):
        """SIGKILL the node's process group. The operator's act, not a crash: the node is started
        again at once and the kill counts toward neither backoff nor FATAL (its policy still applies)."""
        proc = self.procs[name]
        pid = proc.pid
        if proc.state not in (State.RUNNING, State.PAUSED, State.STARTING) or pid is None:
            raise ValueError(f"{name} is {proc.state.value}; nothing to kill")
        proc.killed = True
        child = proc.child
        proc.signal(signal.SIGKILL)
        proc.signal(signal.SIGCONT)
        self.event(f"{name} killed (pid {pid})")
        # answered once its death is seen (started again, or left by its policy): a status read
        # after the answer never shows the dead process as the node, still RUNNING
        seen = self._until(lambda: proc.child is not child or proc.state not in ALIVE)
        await self._first(seen, self.clock.sleep(KILL_SEEN_WITHIN))
        return pid

    def status(self):
        wall = self.clock.wall()
        return {"phase": self.phase, "failed": self.failed, "pid": os.getpid(),
                "topology": str(self.topology.path),
                "nodes": [p.describe(wall) for p in self.procs.values()]}

    def event(self, text):
        self.printer.line(SUPERVISOR, text)

    # ---- internals ----

    def _notify(self):
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, predicate):
        while not predicate():
            await self._changed.wait()

    def _set(self, proc, state):
        proc.set_state(state)
        self._notify()

    def _launch(self, proc):
        if proc.state is not State.STOPPED:  # already started, e.g. by `restart` during start-up
            return
        self._set(proc, State.STARTING)
        task = asyncio.create_task(self._supervise(proc), name=f"supervise {proc.name}")
        task.add_done_callback(lambda task: self._supervision_ended(proc, task))
        self._tasks[proc.name] = task

    def _supervision_ended(self, proc, task):
        """A bug must not leave a node looking alive and everyone waiting for it: say so, give up on it."""
        if task.cancelled() or task.exception() is None:
            return
        self.event(f"{proc.name}: supervision failed ({task.exception()!r}); giving up on it")
        proc.state = State.FATAL
        proc.history.append(State.FATAL)
        self._notify()

    async def _first(self, *coroutines):
        """Run awaitables together; return the set of those done when the first one is, cancel the rest."""
        running = [asyncio.ensure_future(c) for c in coroutines]
        try:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            return done
        finally:
            for task in running:
                if not task.done():
                    await tasks.cancel(task)

    async def _wait_group(self, group, timeout=None):
        """None once every process is RUNNING (or paused since), else the first to end FATAL,
        EXITED or STOPPED, as soon as it does. Raises TimeoutError after `timeout` seconds."""
        def failed():
            return next((p for p in group if p.state in (State.FATAL, State.EXITED, State.STOPPED)), None)

        def settled():
            return failed() or all(p.state in (State.RUNNING, State.PAUSED) for p in group)
        waiting = [self._until(settled)]
        if timeout is not None:
            waiting.append(self.clock.sleep(timeout))
        await self._first(*waiting)
        if not settled():
            raise asyncio.TimeoutError
        return failed()

    async def _secure_etcd(self, members):
        """Users, roles and authentication in the etcd we spawned; None, or the member to blame."""
        begun = self.clock.now()
        try:
            await self.spawner.etcd_ready()
            self.event(f"etcd users, roles and authentication ready in {self.clock.now() - begun:.2f}s")
            return None
        except Exception as exc:
            self.event(f"could not set up etcd users and roles: {exc}")
            return members[0]

    async def _supervise(self, proc):
        """One node's whole life: spawn, wait until ready, and decide what to do when it exits."""
        while True:
            try:
                child = await self.spawner.spawn(proc.spec)
            except OSError as exc:  # no such program, no descriptors left: a failed run like any other
                self.event(f"{proc.name} could not be started: {exc}")
                code = None
            else:
                proc.attach(child, self.clock.now(), self.clock.wall())
                self._notify()
                self.event(f"{proc.name} started (pid {child.pid})")
                code = await self._one_run(proc, child)
            proc.last_exit = code
            proc.health = "-"
            if proc.state is State.STOPPING:
                return
            delay = self._after_exit(proc, code)
            if delay is None:
                return
            if delay:
                await self.clock.sleep(delay)
            proc.restarts += 1
            self._set(proc, State.STARTING)

    async def _one_run(self, proc, child):
        """Until the process exits: RUNNING once ready, killed if not ready within start_timeout."""
        if proc.state is State.STARTING:  # else it was asked to stop while being spawned
            exited, ready = asyncio.ensure_future(child.wait()), asyncio.ensure_future(child.ready())
            done = await self._first(exited, ready, self.clock.sleep(self.settings.start_timeout))
            if proc.state is State.STARTING and exited not in done:  # still wanted, still alive
                if ready in done:
                    proc.ready_at = self.clock.now()
                    proc.health = "SERVING"
                    self._set(proc, State.RUNNING)
                    self.event(f"{proc.name} healthy in {proc.ready_at - proc.started_at:.2f}s"
                               + _stages(ready.result(), proc.running_since, child.created))
                else:
                    self.event(f"{proc.name} not healthy after {self.settings.start_timeout:g}s; killing it")
                    await self._terminate(proc)
        else:
            await self._terminate(proc)
        return await child.wait()

    def _after_exit(self, proc, code):
        """Apply the restart policy to an exit the supervisor did not cause: seconds to wait before
        starting it again (0 after a kill the operator ordered), or None to leave it (EXITED, or
        FATAL after too many failures in a row)."""
        ran_well = proc.ready_at is not None and self.clock.now() - proc.started_at >= STABLE_AFTER
        if ran_well:
            proc.failures = 0
        policy = proc.spec.restart
        if policy == RestartPolicy.NO or (policy == RestartPolicy.ON_FAILURE and code == 0):
            self.event(f"{proc.name} exited with {code}; its restart policy ({policy}) leaves it")
            self._set(proc, State.EXITED)
            return None
        if proc.killed:  # judged once: a start that then fails is a failure like any other
            proc.killed = False
            self.event(f"{proc.name} killed on request; starting it again at once")
            return 0
        proc.failures += 1
        limit = proc.spec.max_restarts if proc.spec.max_restarts is not None else self.settings.max_restarts
        if proc.failures > limit:
            self.event(f"{proc.name} exited with {code}; gave up after {proc.restarts} restarts")
            self._set(proc, State.FATAL)
            return None
        if proc.ready_at is not None and proc.failures == 1:
            # As supervisord does: a process that got as far as ready is started again at once;
            # backoff is for processes that cannot start, and for failures in a row.
            self.event(f"{proc.name} exited with {code}; restarting at once (restart 1 of at most {limit})")
            return 0
        delay = min(self.settings.backoff * 2 ** (proc.failures - 1), MAX_BACKOFF)
        self.event(f"{proc.name} exited with {code}; restarting in {delay:.1f}s "
                   f"(restart {proc.failures} of at most {limit})")
        self._set(proc, State.BACKOFF)
        return delay

    async def _terminate(self, proc):
        """SIGTERM the group, SIGKILL it after the grace period; the exit code."""
        child = proc.child
        if child is None:
            return None
        child.signal_group(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        child.signal_group(signal.SIGTERM)
        exited = asyncio.ensure_future(child.wait())
        if exited not in await self._first(exited, self.clock.sleep(self.settings.stop_grace)):
            child.signal_group(signal.SIGKILL)
        return await child.wait()

    async def _monitor_health(self):
        while True:
            await self.clock.sleep(PROBE_INTERVAL)
            running = [p for p in self.procs.values() if p.state is State.RUNNING]
            results = await asyncio.gather(*(self.spawner.probe(p.spec) for p in running))
            for p, result in zip(running, results):
                if p.state is State.RUNNING:
                    p.health = result


def _stages(stages, spawned, created):
    """' (imports 0.31, setup 0.05, start 0.12)' from the wall-clock times a node reported: a fresh
    process imports after it is spawned; a warm one (`created` earlier) had done so already."""
    if not stages or any(mark not in stages for mark in ("imported", "go", "listening", "ready")):
        return ""
    parts = [f"imports {stages['imported'] - spawned:.2f}"] if created is None else \
        [f"warm, imported {stages['imported'] - created:.2f}s after it was made"]
    parts += [f"setup {stages['listening'] - stages['go']:.2f}", f"start {stages['ready'] - stages['listening']:.2f}"]
    return f" ({', '.join(parts)})"
