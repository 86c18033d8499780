"""How the real supervisor makes nodes: their command lines and environment, where their output
goes, how it learns they are ready, and the health probes behind `strife status`.

A Python node spends most of its start-up importing its code (see docs/performance.md), so its
process is made ahead of time and told to go when it is needed: at `up`, every node is spawned at
once and each starts when the nodes it needs are ready (`prepare`); afterwards one warm spare per
kind waits to replace a node that dies, so a restart skips the imports.

The supervisor's policy only sees what `Spawner` offers (prepare, spawn, discard, all_started,
probe, etcd_ready, close), so tests replace it with fake processes; `build` wires the real one.
"""
import asyncio
import contextlib
import os
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strife.core import lifeline
from strife.deployment import identities, tls
from strife.deployment.topology import NodeKind
from strife.launcher import etcd, etcd_access, etcd_upkeep, health, process, remote_ready
from strife.launcher.printer import Printer
from strife.launcher.supervisor import Supervisor

SPARE_AFTER = 0.3  # seconds after a spare is used before the next is made: first let the node start


def etcd_argv(topology, spec, etcd_binary):
    # A Go binary: the lifeline (standard library only, hence -I -S) sets its parent-death signal
    # and execs it.
    return [sys.executable, "-I", "-S", lifeline.__file__, "--", *etcd.command(topology, spec, etcd_binary)]


def python_argv(topology, kind, name=None):
    """Safe-path mode (-P): a `strife/` folder in the deployment directory cannot shadow the package.
    Without a name: a spare, named when it is needed."""
    return [sys.executable, "-P", "-m", f"strife.nodes.{kind}", "--home", str(topology.home),
            *(["--name", name] if name else [])]


def build(topology, printer=None, echo_nodes=True, host=None):
    """The supervisor of a prepared topology (or of one of its hosts), with real processes.
    Raises etcd.EtcdNotFound."""
    printer = printer or Printer()
    return Supervisor(topology, Spawner(topology, printer, echo_nodes, host), printer, host=host)


class Waiting:
    """A Python node's process that has been spawned but not yet told to go."""

    def __init__(self, proc, line, name, drained):
        self.proc, self.line, self.name, self.drained = proc, line, name, drained
        self.created = time.time()


class Spawner:
    def __init__(self, topology, printer, echo_nodes, host=None):
        self.topology = topology
        self.host = host
        self.layout = topology.layout
        self.printer = printer
        self.echo_nodes = echo_nodes
        local = topology.on_host(host) if host else topology.nodes
        self.etcd_binary = etcd.find_binary(topology) if any(n.kind == NodeKind.ETCD for n in local) else None
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **{lifeline.ENV: str(os.getpid())})
        self._credentials = {domain: tls.channel_credentials(topology.home, identities.OPERATOR, trust=(domain,))
                             for domain in (identities.INFRA, identities.USERS)}
        self._probes = {}    # node name -> channel, for the health column of `strife status`
        self._prepared = {}  # node name -> Waiting
        self._spares = {}    # kind -> Waiting
        self._refills = {}   # kind -> task making its next spare
        self._pumps = set()
        self._want_spares = False
        self._closed = False
        self._upkeep = None  # the task that keeps etcd's file small

    async def prepare(self, spec):
        """Spawn the node's process now; it starts when `spawn` says go."""
        if spec.kind != NodeKind.ETCD and spec.name not in self._prepared:
            with contextlib.suppress(OSError):  # then it is spawned when it is needed, and fails there
                self._prepared[spec.name] = await self._python(spec.kind, spec.name)

    async def spawn(self, spec):
        if spec.kind == NodeKind.ETCD:  # it cannot say when it is ready: ask its health service
            proc = await process.spawn(etcd_argv(self.topology, spec, self.etcd_binary), self.env,
                                       None if self.echo_nodes else self.layout.log(spec.name))
            return process.Child(proc, HealthWait(self._channel(spec, fast_reconnect=True)),
                                 self._pump(spec.name, proc))
        waiting = self._prepared.pop(spec.name, None) or self._take_spare(spec.kind)
        if waiting is not None and waiting.proc.returncode is not None:  # died waiting (its log says why)
            waiting.line.close()
            waiting = None
        if waiting is None:
            waiting = await self._python(spec.kind, spec.name)
        if waiting.name is None:  # a spare: it learns its name, and where its output goes
            await waiting.line.go(name=spec.name, log=None if self.echo_nodes else str(self.layout.log(spec.name)))
            waiting.drained = self._pump(spec.name, waiting.proc)
        else:
            await waiting.line.go()
        return process.Child(waiting.proc, waiting.line, waiting.drained, waiting.created)

    async def discard(self, spec):
        """The node will not be started after all: end the process prepared for it."""
        await self._end(self._prepared.pop(spec.name, None))

    def all_started(self):
        """Every node is up: time for the spares (not before, they would compete for the CPU)."""
        self._want_spares = self.topology.settings.warm_spares
        local = self.topology.on_host(self.host) if self.host else self.topology.nodes
        for kind in sorted({n.kind for n in local} - {"etcd"}):
            self._refill(kind, delay=0)

    async def probe(self, spec):
        """'SERVING', 'NOT_SERVING', 'UNKNOWN' or 'UNREACHABLE'."""
        if spec.name not in self._probes:
            self._probes[spec.name] = self._channel(spec)
        return await health.probe(self._probes[spec.name])

    async def etcd_ready(self):
        """Users, roles and authentication in the etcd we spawned, before any node uses it; then
        its upkeep (defragmentation when it pays) for as long as the deployment runs. With hosts,
        the host of the first member does this; the others wait until it is done."""
        if self.host and self.topology.of_kind("etcd")[0].host_name != self.host:
            await remote_ready.etcd_secured(self.topology)
            return
        await etcd_access.ensure(self.topology)
        if self._upkeep is None:
            self._upkeep = asyncio.create_task(etcd_upkeep.run(
                self.topology, lambda text: self.printer.line("etcd", text)), name="etcd upkeep")

    async def remote_ready(self, kind):
        """Nodes of `kind` on other hosts are ready (seen through etcd)."""
        wait = remote_ready.WAITS.get(kind)
        if wait is not None:
            await wait(self.topology)

    async def close(self):
        self._closed = True
        if self._upkeep is not None:
            self._upkeep.cancel()
        for task in self._refills.values():
            task.cancel()
        for waiting in [*self._prepared.values(), *self._spares.values()]:
            await self._end(waiting)
        self._prepared.clear()
        self._spares.clear()
        for channel in self._probes.values():
            await channel.close()
        self._probes.clear()
        for pump in list(self._pumps):
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    # ---- internals ----

    async def _python(self, kind, name):
        line = process.Lifeline()
        if self.echo_nodes:
            output = None  # a pipe, copied by _pump
        else:  # its own log file; a spare writes nothing before it has a name
            output = self.layout.log(name) if name else os.devnull
        try:
            proc = await process.spawn(python_argv(self.topology, kind, name),
                                       dict(self.env, **{lifeline.FD: str(line.child_fd)}),
                                       output, pass_fds=(line.child_fd,))
        except BaseException:
            line.close()
            raise
        finally:
            line.spawned()
        return Waiting(proc, line, name, self._pump(name, proc) if name else None)

    def _take_spare(self, kind):
        spare = self._spares.pop(kind, None)
        self._refill(kind, delay=SPARE_AFTER)
        return spare

    def _refill(self, kind, delay):
        if not self._want_spares or self._closed or kind in self._refills or kind in self._spares:
            return
        task = asyncio.create_task(self._make_spare(kind, delay), name=f"spare {kind}")
        self._refills[kind] = task
        task.add_done_callback(lambda _: self._refills.pop(kind, None))

    async def _make_spare(self, kind, delay):
        await asyncio.sleep(delay)
        with contextlib.suppress(OSError):  # no spare this time; a restart just takes longer
            self._spares[kind] = await self._python(kind, None)

    async def _end(self, waiting):
        if waiting is None:
            return
        waiting.line.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(waiting.proc.pid, signal.SIGKILL)
        await waiting.proc.wait()

    def _channel(self, spec, fast_reconnect=False):
        domain = identities.USERS if spec.kind == NodeKind.CLIENT else identities.INFRA
        backoff = (20, 100) if fast_reconnect else (100, 1000)  # ms: first retry, longest wait
        return tls.secure_channel(spec.address, self._credentials[domain], spec.name, options=[
            ("grpc.initial_reconnect_backoff_ms", backoff[0]), ("grpc.max_reconnect_backoff_ms", backoff[1])])

    def _pump(self, name, proc):
        """In the foreground: the node's output, split into lines that carry the node's name, to the
        terminal. Strife's nodes write logs/<node>.log themselves (strife/core/log_setup.py), detached or
        not; etcd's output is appended to logs/etcd.log here."""
        if proc.stdout is None:
            return None
        task = asyncio.create_task(self._copy(name, proc.stdout))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return task

    async def _copy(self, name, stream):
        spec = self.topology.node(name)
        log = open(self.layout.log(name), "ab", buffering=0) if spec.kind == NodeKind.ETCD else None
        try:
            while raw := await stream.readline():
                if log:
                    log.write(raw)
                self.printer.relay(name, raw.decode(errors="replace").rstrip("\n"))
        finally:
            if log:
                log.close()


class HealthWait:
    """Readiness of a program that cannot say it is ready (etcd): its health service answers SERVING.
    The call waits for the connection (retried every 20-100 ms while the port is closed)."""

    def __init__(self, channel):
        self.channel = channel

    async def wait(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    answer = await stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=5)  # pyright: ignore[reportAttributeAccessIssue]
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return {}
                await asyncio.sleep(0.02)
        finally:
            self.close()

    def close(self):
        if self.channel is not None:
            asyncio.ensure_future(self.channel.close())
            self.channel = None
