"""The supervisor: starts a topology's nodes in dependency order, watches their health,
restarts what crashes with exponential backoff and a limit, and stops everything in reverse.
"""
import asyncio
import os
import signal
import sys
import time


from strife import health, tasks, tls
from strife.launcher import certs, etcd, etcd_access
from strife.launcher.printer import Printer
from strife.launcher.process import NodeProcess
from strife.launcher.states import ALIVE, State
from strife.launcher.topology import KINDS
from strife.layout import Layout

STABLE_AFTER = 10.0      # a run healthy this long resets the consecutive-failure count
MAX_BACKOFF = 30.0
PROBE_INTERVAL = 1.0     # health of RUNNING nodes
SUPERVISOR = "strife"    # the name the supervisor's own lines carry


def node_argv(topology, spec, etcd_binary):
    if spec.kind == "etcd":
        return etcd.command(topology, spec, etcd_binary)
    return [sys.executable, "-m", f"strife.nodes.{spec.kind}", "--home", str(topology.home), "--name", spec.name]


class Supervisor:
    def __init__(self, topology, printer=None, echo_nodes=True):
        self.topology = topology
        self.settings = topology.settings
        self.layout = Layout(topology.home)
        self.printer = printer or Printer()
        self.echo_nodes = echo_nodes
        binary = etcd.find_binary(topology) if topology.of_kind("etcd") else None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs = {n.name: NodeProcess(n, node_argv(topology, n, binary), env) for n in topology.nodes}
        self.phase = "starting"   # starting -> ready | failed -> stopping -> stopped
        self.failed = None        # name of the node that kept startup from completing
        self._changed = asyncio.Condition()
        self._tasks = {}
        self._monitor = None
        self._stop_requested = asyncio.Event()
        self._credentials = {domain: tls.channel_credentials(topology.home, certs.OPERATOR, trust=(domain,))
                             for domain in (certs.INFRA, certs.USERS)}

    # ---- public API (also what the control socket calls) ----

    async def start(self):
        """Start every node in order, each kind once the previous one is healthy. True when all are."""
        self.event(f"starting {len(self.procs)} nodes from {self.topology.path.name}")
        self._monitor = asyncio.create_task(self._monitor_health())
        begun = time.monotonic()
        for kind in KINDS:
            group = [p for p in self.procs.values() if p.spec.kind == kind]
            for proc in group:
                self._tasks[proc.name] = asyncio.create_task(self._supervise(proc))
            failed = await self._wait_group(group)
            if not failed and kind == "etcd" and group:
                failed = await self._secure_etcd(group)
            if failed:
                self.phase, self.failed = "failed", failed.name
                waiting = [p.name for p in self.procs.values() if p.state is State.STOPPED]
                self.event(f"{failed.name} is {failed.state.value}; not starting "
                           f"{', '.join(waiting) or 'anything else'}")
                return False
        self.phase = "ready"
        self.event(f"all {len(self.procs)} nodes healthy in {time.monotonic() - begun:.1f}s")
        await self._notify()
        return True

    async def stop(self):
        """Stop everything in reverse start order: SIGTERM, then SIGKILL after the grace period."""
        if self.phase in ("stopping", "stopped"):
            await self.wait_stopped()
            return
        self.phase = "stopping"
        self.event("stopping")
        if self._monitor:
            self._monitor.cancel()
        for kind in reversed(KINDS):
            await asyncio.gather(*(self.stop_node(p.name) for p in self.procs.values() if p.spec.kind == kind))
        self.phase = "stopped"
        self.event("stopped")
        await self._notify()

    async def wait_stopped(self):
        async with self._changed:
            await self._changed.wait_for(lambda: self.phase == "stopped")

    def request_stop(self):
        self._stop_requested.set()

    async def run(self):
        """Foreground: start, then stay until asked to stop (signal or control socket)."""
        await self.start()
        await self._stop_requested.wait()
        await self.stop()

    async def stop_node(self, name):
        proc = self.procs[name]
        task = self._tasks.pop(name, None)
        if proc.state not in ALIVE:  # waiting out a backoff, or its life is over: nothing to signal
            await tasks.cancel(task)
        elif proc.state is not State.STOPPING:
            proc.set_state(State.STOPPING)
            await self._notify()
            code = await proc.terminate(self.settings.stop_grace)
            self.event(f"{name} stopped (exit {code})")
            if task:
                await task  # sees STOPPING and returns without restarting
        if proc.state in (State.STOPPING, State.BACKOFF):
            proc.set_state(State.STOPPED)
        proc.health = "-"
        await self._notify()

    async def restart_node(self, name, timeout=None):
        """Stop one node and start it again; True once it is healthy."""
        proc = self.procs[name]
        await self.stop_node(name)
        proc.failures = 0
        proc.restarts += 1
        self._tasks[name] = asyncio.create_task(self._supervise(proc))
        return await self._wait_group([proc], timeout) is None

    async def pause(self, name, seconds=None):
        """SIGSTOP the node's process group; with `seconds`, SIGCONT it again by itself."""
        proc = self.procs[name]
        if proc.state is not State.RUNNING:
            raise ValueError(f"{name} is {proc.state.value}; only a RUNNING node can be paused")
        proc.signal_group(signal.SIGSTOP)
        proc.health = "PAUSED"
        await self._set(proc, State.PAUSED)
        self.event(f"{name} paused" + (f" for {seconds:g}s" if seconds else ""))
        if seconds:
            pid = proc.pid
            asyncio.get_running_loop().call_later(
                seconds, lambda: asyncio.ensure_future(self._resume_if(name, pid)))

    async def _resume_if(self, name, pid):
        if self.procs[name].state is State.PAUSED and self.procs[name].pid == pid:
            await self.resume(name)

    async def resume(self, name):
        proc = self.procs[name]
        if proc.state is not State.PAUSED:
            raise ValueError(f"{name} is {proc.state.value}, not PAUSED")
        proc.signal_group(signal.SIGCONT)
        await self._set(proc, State.RUNNING)
        self.event(f"{name} resumed")

    async def kill(self, name):
        """SIGKILL the node's process group, as a crash would; the restart policy applies."""
        proc = self.procs[name]
        if proc.state not in (State.RUNNING, State.PAUSED, State.STARTING):
            raise ValueError(f"{name} is {proc.state.value}; nothing to kill")
        pid = proc.pid
        proc.signal_group(signal.SIGKILL)
        proc.signal_group(signal.SIGCONT)
        self.event(f"{name} killed (pid {pid})")
        return pid

    def status(self):
        return {"phase": self.phase, "failed": self.failed, "pid": os.getpid(),
                "topology": str(self.topology.path),
                "nodes": [p.describe() for p in self.procs.values()]}

    def event(self, text):
        self.printer.line(SUPERVISOR, text)

    # ---- internals ----

    async def _notify(self):
        async with self._changed:
            self._changed.notify_all()

    async def _set(self, proc, state):
        proc.set_state(state)
        await self._notify()

    async def _wait_group(self, group, timeout=None):
        """None when every process is RUNNING, else the first that ended FATAL or EXITED."""
        def settled():
            return all(p.state is State.RUNNING or p.state in (State.FATAL, State.EXITED) for p in group)
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(settled), timeout)
        return next((p for p in group if p.state is not State.RUNNING), None)

    async def _secure_etcd(self, members):
        """Users, roles and authentication in the etcd we spawned; None, or the member to blame."""
        try:
            await etcd_access.ensure(self.topology)
            return None
        except Exception as exc:
            self.event(f"could not set up etcd users and roles: {exc}")
            return members[0]

    def _channel(self, spec):
        domain = certs.USERS if spec.kind == "client" else certs.INFRA
        return tls.secure_channel(spec.address, self._credentials[domain], spec.name, options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)])

    async def _supervise(self, proc):
        """One node's whole life: spawn, wait for health, and decide what to do when it exits."""
        while True:
            await self._set(proc, State.STARTING)
            # Detached, a node writes its log file itself: no copy through the supervisor per line.
            await proc.spawn(None if self.echo_nodes else self.layout.log(proc.name))
            self.event(f"{proc.name} started (pid {proc.pid})")
            pump = asyncio.create_task(self._pump(proc))
            exited = asyncio.create_task(proc.proc.wait())
            channel = self._channel(proc.spec)
            try:
                healthy = asyncio.create_task(self._until_healthy(proc, channel))
                done, _ = await asyncio.wait({exited, healthy}, timeout=self.settings.start_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if healthy in done:
                    proc.health = "SERVING"
                    await self._set(proc, State.RUNNING)
                    self.event(f"{proc.name} healthy in {time.monotonic() - proc.started_at:.2f}s")
                else:
                    healthy.cancel()
                    if exited not in done:
                        self.event(f"{proc.name} not healthy after {self.settings.start_timeout:g}s; killing it")
                        await proc.terminate(self.settings.stop_grace)
                code = await exited
            finally:
                await channel.close()
            await pump
            proc.last_exit = code
            proc.health = "-"
            if proc.state is State.STOPPING:
                return
            if not await self._after_exit(proc, code):
                return

    async def _after_exit(self, proc, code):
        """Apply the restart policy to an unexpected exit. True means: start it again."""
        ran_well = proc.state is State.RUNNING and time.monotonic() - proc.started_at >= STABLE_AFTER
        if ran_well:
            proc.failures = 0
        policy = proc.spec.restart
        if policy == "no" or (policy == "on-failure" and code == 0):
            self.event(f"{proc.name} exited with {code}; restart policy {policy!r} leaves it")
            await self._set(proc, State.EXITED)
            return False
        proc.failures += 1
        limit = proc.spec.max_restarts if proc.spec.max_restarts is not None else self.settings.max_restarts
        if proc.failures > limit:
            self.event(f"{proc.name} exited with {code}; gave up after {proc.restarts} restarts")
            await self._set(proc, State.FATAL)
            return False
        delay = min(self.settings.backoff * 2 ** (proc.failures - 1), MAX_BACKOFF)
        self.event(f"{proc.name} exited with {code}; restarting in {delay:.1f}s "
                   f"(restart {proc.failures} of at most {limit})")
        await self._set(proc, State.BACKOFF)
        await asyncio.sleep(delay)
        proc.restarts += 1
        return True

    async def _until_healthy(self, proc, channel):
        delay = 0.05
        while await health.probe(channel, timeout=1.0) != "SERVING":
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        return True

    async def _monitor_health(self):
        channels = {}
        try:
            while True:
                await asyncio.sleep(PROBE_INTERVAL)
                running = [p for p in self.procs.values() if p.state is State.RUNNING]
                for p in running:
                    if p.name not in channels or channels[p.name][0] != p.pid:
                        if p.name in channels:
                            await channels[p.name][1].close()
                        channels[p.name] = (p.pid, self._channel(p.spec))
                results = await asyncio.gather(*(health.probe(channels[p.name][1]) for p in running))
                for p, result in zip(running, results):
                    if p.state is State.RUNNING:
                        p.health = result
        finally:
            for _, channel in channels.values():
                await channel.close()

    async def _pump(self, proc):
        """In the foreground: the node's output, split into lines that carry the node's name, to
        the terminal. Strife's nodes write logs/<node>.log themselves (strife/log_setup.py);
        etcd's output is appended to logs/etcd.log here."""
        stream = proc.proc.stdout
        if stream is None:
            return
        log = open(self.layout.log(proc.name), "ab", buffering=0) if proc.spec.kind == "etcd" else None
        try:
            while raw := await stream.readline():
                if log:
                    log.write(raw)
                self.printer.relay(proc.name, raw.decode(errors="replace").rstrip("\n"))
        finally:
            if log:
                log.close()
