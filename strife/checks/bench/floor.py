"""The floor: what a payment's shape costs when nothing is done but its gRPC calls and the fsyncs
its promises rest on (`strife bench --floor`).

Do-nothing stand-ins, over the deployment's mTLS, each its own process as the nodes are:
- a gateway that relays each call the way a payment travels, batching what waits for the same
  server as the real gateway does (strife's own Batcher), and checks, logs and records nothing;
- two banks that write one SQLite row per call in WAL with synchronous=FULL (the durable hold,
  or the same-bank transfer, in one fsync per call whatever it carries);
- a decider in etcd's place, with no fsync at all (a lower floor than etcd's raft log).

A same-bank payment is caller -> gateway -> one bank -> answer. A cross-bank payment is caller ->
gateway -> both banks in parallel -> decider -> answer, then phase 2 to both banks after the answer.
A call marked DIRECT skips the batching (a lone caller has nothing to share a round trip with, and
the batcher's own task and future cost it a little).
No Strife code can take that shape faster on the same machine: a target below the floor is out of
reach of the design there, not of its code.

`python -P -m strife.checks.bench.floor --home DIR --role bank|decider|gateway [...]` prints its port
on the first line and serves until SIGTERM, or until the process that spawned it dies.
"""
import argparse
import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile


from strife.checks.bench import echo
from strife.core import lifeline
from strife.deployment import tls
from strife.deployment.identities import OPERATOR
from strife.nodes.gateway.batching import Batcher
from strife.rpc import echo_pb2, echo_pb2_grpc

SAME_BANK, CROSS_BANK = b"s", b"c"  # the first byte of a call to the floor's gateway says its shape
DIRECT = b"!"  # as the second byte: sent on at once, not batched
ROLES = ("bank", "decider", "gateway")


class Bank(echo_pb2_grpc.EchoServicer):
    """One durable row per call, as a bank's hold or transfer is one fsync per Exchange."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS calls (payload BLOB)")

    async def Echo(self, request, context):
        self.db.execute("INSERT INTO calls VALUES (?)", (request.payload,))
        return request


class Decider(echo_pb2_grpc.EchoServicer):
    async def Echo(self, request, context):
        return request


class _Server:
    """One stand-in, reached by a call of its own (`direct`) or in the next batch."""

    def __init__(self, stub):
        self.stub = stub
        self.batcher = Batcher(self._send)

    async def _send(self, items):
        await self.stub.Echo(echo_pb2.EchoMessage(payload=b"".join(items)), timeout=10)
        return [None] * len(items)

    async def call(self, item, direct):
        if direct:
            await self.stub.Echo(echo_pb2.EchoMessage(payload=item), timeout=10)
        else:
            await self.batcher.submit(item)


class Gateway(echo_pb2_grpc.EchoServicer):
    def __init__(self, banks, decider):
        self.banks = [_Server(stub) for stub in banks]
        self.decider = _Server(decider)
        self.background = set()

    async def Echo(self, request, context):
        item = request.payload
        direct = item[1:2] == DIRECT
        if item[:1] == SAME_BANK:
            await self.banks[0].call(item, direct)
            return request
        await asyncio.gather(*(bank.call(item, direct) for bank in self.banks))  # the prepares
        await self.decider.call(item, direct)
        phase2 = asyncio.ensure_future(asyncio.gather(*(bank.call(item, direct) for bank in self.banks)))
        self.background.add(phase2)  # kept until done: a task nobody holds may be collected
        phase2.add_done_callback(self._forget)
        return request

    def _forget(self, phase2):
        self.background.discard(phase2)
        if not phase2.cancelled():
            phase2.exception()  # retrieved: one cut short as the stand-in stops is no traceback in bench's output


async def _serve(home, role, banks, decider, scratch):
    channels = []
    if role == "bank":
        servicer = Bank(os.path.join(scratch, f"bank-{os.getpid()}.db"))
    elif role == "decider":
        servicer = Decider()
    else:
        credentials = tls.channel_credentials(home, OPERATOR)
        channels = [tls.secure_channel(f"127.0.0.1:{port}", credentials, OPERATOR) for port in [*banks, decider]]
        stubs = [echo_pb2_grpc.EchoStub(channel) for channel in channels]
        servicer = Gateway(stubs[:-1], stubs[-1])
    await echo.serve(home, servicer)
    for channel in channels:
        await channel.close()


class Floor:
    """The four stand-ins, spawned from the main thread and tied to this process's life."""

    def __init__(self, home):
        self.home = home
        self.processes = {}
        self.scratch = tempfile.mkdtemp(prefix="strife-floor-")  # the bank stand-ins' databases

    def _spawn(self, name, role, *extra):
        process = echo.spawn(self.home, "strife.checks.bench.floor", "--role", role, "--scratch", self.scratch, *extra)
        self.processes[name] = process
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the floor's {name} did not start (exit {process.wait(10)})")
        return int(line)

    def start(self):
        """The gateway's port."""
        banks = [self._spawn(f"floor {name}", "bank") for name in ("bank a", "bank b")]
        decider = self._spawn("floor decider", "decider")
        return self._spawn("floor gateway", "gateway", "--banks", ",".join(map(str, banks)), "--decider", str(decider))

    def pids(self):
        return {name: process.pid for name, process in self.processes.items()}

    def database(self, name):
        """Where the bank stand-in `name` writes its rows."""
        return os.path.join(self.scratch, f"bank-{self.processes[name].pid}.db")

    def stop(self):
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def main(argv=None):
    lifeline.hold()  # first thing: dies with whoever spawned it
    os.umask(0o077)
    parser = argparse.ArgumentParser(description="a do-nothing stand-in of a payment's shape (`strife bench --floor`)")
    parser.add_argument("--home", required=True)
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--scratch", required=True, help="where a bank stand-in writes its database")
    parser.add_argument("--banks", default="", help="gateway: the two bank stand-ins' ports, comma-separated")
    parser.add_argument("--decider", type=int, default=0, help="gateway: the decider's port")
    args = parser.parse_args(argv)
    banks = [int(port) for port in args.banks.split(",") if port]
    if args.role == "gateway" and (len(banks) != 2 or not args.decider):
        parser.error("the gateway needs --banks P1,P2 and --decider P")
    asyncio.run(_serve(args.home, args.role, banks, args.decider, args.scratch))


if __name__ == "__main__":
    sys.exit(main())
