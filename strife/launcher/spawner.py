"""How the real supervisor makes nodes: their command lines and environment, where their output
goes, how it learns they are ready, and the health probes behind `strife status`.

The supervisor's policy only sees what `Spawner` offers (spawn, probe, etcd_ready, close), so tests
replace it with fake processes; `build` wires the real one.
"""
import asyncio
import os
import sys

from strife import health, lifeline, tls
from strife.launcher import certs, etcd, etcd_access, process
from strife.launcher.printer import Printer
from strife.launcher.supervisor import Supervisor
from strife.layout import Layout


def node_argv(topology, spec, etcd_binary):
    """Safe-path mode (-P): a `strife/` folder in the deployment directory cannot shadow the package."""
    if spec.kind == "etcd":  # a Go binary: the lifeline sets its parent-death signal and execs it
        return [sys.executable, "-P", "-m", "strife.lifeline", "--", *etcd.command(topology, spec, etcd_binary)]
    return [sys.executable, "-P", "-m", f"strife.nodes.{spec.kind}", "--home", str(topology.home),
            "--name", spec.name]


def build(topology, printer=None, echo_nodes=True):
    """The supervisor of a prepared topology, with real processes. Raises etcd.EtcdNotFound."""
    printer = printer or Printer()
    return Supervisor(topology, Spawner(topology, printer, echo_nodes), printer)


class Spawner:
    def __init__(self, topology, printer, echo_nodes):
        self.topology = topology
        self.layout = Layout(topology.home)
        self.printer = printer
        self.echo_nodes = echo_nodes
        binary = etcd.find_binary(topology) if topology.of_kind("etcd") else None
        self.argv = {n.name: node_argv(topology, n, binary) for n in topology.nodes}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **{lifeline.ENV: str(os.getpid())})
        self._credentials = {domain: tls.channel_credentials(topology.home, certs.OPERATOR, trust=(domain,))
                             for domain in (certs.INFRA, certs.USERS)}
        self._probes = {}  # node name -> channel, for the health column of `strife status`

    async def spawn(self, spec):
        # Detached, a node writes its log file itself: no copy through the supervisor per line.
        proc = await process.spawn(self.argv[spec.name], self.env,
                                   None if self.echo_nodes else self.layout.log(spec.name))
        drained = asyncio.create_task(self._pump(spec.name, proc.stdout)) if proc.stdout else None
        return process.Child(proc, lambda: self._until_healthy(spec), drained)

    async def probe(self, spec):
        """'SERVING', 'NOT_SERVING', 'UNKNOWN' or 'UNREACHABLE'."""
        if spec.name not in self._probes:
            self._probes[spec.name] = self._channel(spec)
        return await health.probe(self._probes[spec.name])

    async def etcd_ready(self):
        """Users, roles and authentication in the etcd we spawned, before any node uses it."""
        await etcd_access.ensure(self.topology)

    async def close(self):
        for channel in self._probes.values():
            await channel.close()
        self._probes.clear()

    def _channel(self, spec):
        domain = certs.USERS if spec.kind == "client" else certs.INFRA
        return tls.secure_channel(spec.address, self._credentials[domain], spec.name, options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)])

    async def _until_healthy(self, spec):
        channel = self._channel(spec)  # a fresh one: no reconnect backoff left from the last process
        try:
            delay = 0.05
            while await health.probe(channel, timeout=1.0) != "SERVING":
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        finally:
            await channel.close()

    async def _pump(self, name, stream):
        """In the foreground: copy the node's output to logs/<node>.log and, split into lines that
        carry the node's name, to the terminal. (Detached, the node writes its log file itself.)"""
        with open(self.layout.log(name), "ab", buffering=0) as log:
            while raw := await stream.readline():
                log.write(raw)
                self.printer.line(name, raw.decode(errors="replace").rstrip("\n"))
