"""Orchestrate a benchmark: bench accounts, the echo reference, payments, memory, figures."""
import asyncio
import collections
import contextlib
import functools
import itertools
import random
import secrets
import statistics
import time
import uuid

import grpc
import psutil

from strife.checks.bench import echo as echo_server, floor, report, trace_cost
from strife.checks.bench.alternate import Side, alternate, slices
from strife.checks.bench.load import closed_loop
from strife.client.gateway_client import GatewayClient
from strife.core.outcomes import Outcome
from strife.deployment import certs, credentials, identities, tls
from strife.launcher import control
from strife.rpc import echo_pb2, echo_pb2_grpc

_SAMPLE_OUTCOME = {Outcome.COMMITTED: "ok", Outcome.ABORTED: "aborted"}


# Set-up, not measured: 64 first log-ins are 64 scrypt runs in the gateway's one scrypt thread,
# which on a loaded machine take longer than a payment's 10 s
LOGIN_TIMEOUT = 120
RPCS_PER_PAYMENT = 6  # client->gateway, two prepares, the decision write, two commits
SAME_BANK, CROSS_BANK = "same-bank", "cross-bank"
PAYLOAD = b"x" * 64   # about the size of a payment request
# Seconds per turn when loads alternate: long beside a 32-caller queue's drain (about one latency, 0.1 s)
MANY_SLICE, SINGLE_SLICE = 2.0, 1.0


async def _side(calls, label, caller, concurrency=1, pids=None):
    """A load for alternate(): `caller` (a context giving `call(worker, n)`) entered on `calls`."""
    return Side(label, await calls.enter_async_context(caller), concurrency, pids)


def _summary(side):
    """A load's figures over the time it ran, all its turns together."""
    return report.summarize(side.samples, side.span)


def _lone(shape):
    """A floor call of `shape` (same-bank or cross-bank) sent on at once, as a lone caller's are."""
    message = shape + floor.DIRECT + PAYLOAD
    return lambda worker, n: message


def _mix(same_bank_share, seed):
    """Floor calls, same-bank with probability `same_bank_share`, else cross-bank (batched)."""
    rng, same, cross = random.Random(seed), floor.SAME_BANK + PAYLOAD, floor.CROSS_BANK + PAYLOAD
    return lambda worker, n: same if rng.random() < same_bank_share else cross


def _against_echo(figures, echo_rate, echo_p50):
    """The targets' figures: the ratio to echo's throughput and the single-caller p50s over echo's."""
    figures["ratio"] = round(figures["payments"]["per_s"] * RPCS_PER_PAYMENT / echo_rate, 3) if echo_rate else None
    for key, phase in (("single_p50_over_echo_p50", "payments_single"),
                       ("same_bank_single_p50_over_echo_p50", "payments_single_same_bank")):
        figures[key] = round(figures[phase]["p50_ms"] / echo_p50, 2) if echo_p50 and figures[phase]["ok"] else None


class Bench:
    def __init__(self, topology, seconds, concurrency, progress, with_floor=False):
        self.topology, self.seconds, self.concurrency = topology, seconds, concurrency
        self.with_floor = with_floor
        self.progress = progress
        self.home = topology.home
        self.accounts = max(2 * concurrency, 16)
        admins = [c.name for c in topology.of_kind("client") if c.role == "admin"]
        if not admins:
            raise ValueError("the topology has no admin client to register bench accounts with")
        self.admin = admins[0]
        self.banks = {}  # bench account -> its bank, learnt at the start of a run
        self.echo_samples = []
        self.answered = collections.Counter()  # definite answers in every phase: what the metrics must count

    async def _accounts(self):
        """bench-000... spread over the banks, each able to pay for the whole run; reused across runs."""
        banks = [b.name for b in self.topology.of_kind("bank")]
        names = [f"bench-{i:03d}" for i in range(self.accounts)]
        known = credentials.load(self.home)
        missing = [n for n in names if n not in known or not self.topology.layout.cert(n).exists()]
        if missing:
            self.progress(f"registering {len(missing)} bench accounts")
            async with GatewayClient(self.topology, self.admin) as admin:
                for i, name in enumerate(missing):
                    password = secrets.token_urlsafe(16)
                    try:
                        await admin.register(name, banks[i % len(banks)], password,
                                             self.topology.settings.max_amount_minor)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                            raise
                        if name in known:  # its password is here, its certificate is not: a new one
                            certs.issue(self.home, name, "client", force=True)
                        continue  # else registered by an earlier run whose credentials are gone: skip it
                    certs.issue(self.home, name, "client")
                    credentials.set_password(self.home, name, password)
        known = credentials.load(self.home)
        return [n for n in names if n in known]

    async def _banks_of(self, users):
        """{user: bank}, from each account's own balance answer (which also logs every account in)."""
        async def bank_of(user):
            async with GatewayClient(self.topology, user) as client:
                return user, (await client.balance(timeout=LOGIN_TIMEOUT)).bank
        return dict(await asyncio.gather(*(bank_of(u) for u in users)))

    def _payees(self, payer, kind):
        """Whom `payer` may pay in a phase of `kind`: same-bank, cross-bank, or anyone (None)."""
        return [u for u in self.banks if u != payer and (
            kind is None or (self.banks[u] == self.banks[payer]) == (kind == SAME_BANK))]

    @contextlib.asynccontextmanager
    async def _payer(self, users, concurrency, kind=None):
        """`pay(worker, n)` for closed-loop callers: (outcome, kind) of one payment. Every payer's
        TLS handshake and first password check (scrypt) happen here, before any clock starts: a
        run measures payments, not logging in."""
        payees = {u: self._payees(u, kind) for u in users}
        payers = [u for u in users if payees[u]][:concurrency]
        passwords = credentials.load(self.home)
        # the password given: a bench account's does not change during a run (no look at the file per call)
        clients = {u: GatewayClient(self.topology, u, password=passwords.get(u)) for u in payers}
        try:
            await asyncio.gather(*(c.balance(timeout=LOGIN_TIMEOUT) for c in clients.values()))
            rng = random.Random(concurrency)
            run = secrets.token_hex(6)  # transaction ids unique across runs, without a uuid per payment
            numbers = itertools.count()  # ... and across the closed loops (slices) these callers run
            kinds = {(payer, payee): SAME_BANK if self.banks[payer] == self.banks[payee] else CROSS_BANK
                     for payer in payers for payee in payees[payer]}

            async def pay(worker, n):
                payer = payers[worker % len(payers)]
                payee = rng.choice(payees[payer])
                answer = Outcome.of_number(
                    (await clients[payer].pay(payee, 1, f"bench-{run}-{next(numbers)}", timeout=10)).outcome)
                self.answered[answer.value] += 1
                return _SAMPLE_OUTCOME.get(answer, "error"), kinds[payer, payee]
            yield pay
        finally:
            for client in clients.values():
                await client.close()

    async def _payments(self, users, concurrency, seconds, label, kind=None, started=None, rate=None):
        """Closed-loop payments (paced at `rate` per second, if given). `started()` is called once
        the callers have logged in, as the clock starts."""
        async with self._payer(users, concurrency, kind) as pay:
            if started:
                started()
            return await closed_loop(pay, concurrency, seconds, self._progress(label), rate=rate)

    async def _stages(self, users, count=50):
        """Medians, in ms, of where a lone cross-bank payment's time goes: client->gateway (the call
        until the gateway's handler has it: the client, the network, TLS, the interceptors), the
        prepares, the decision in etcd, the rest of the gateway's work, and the reply (from the
        handler's answer until the client has it). The first and the last compare the client's
        clock with the gateway's: one clock on one machine, as the bench's deployment is."""
        payer = next(u for u in users if self._payees(u, CROSS_BANK))
        rows = []
        async with GatewayClient(self.topology, payer) as client:
            await client.balance()
            for _ in range(count):
                sent = time.time()
                answer, stages = await client.pay_timed(self._payees(payer, CROSS_BANK)[0], 1, str(uuid.uuid4()))
                answered = time.time()
                self.answered[Outcome.of_number(answer.outcome).value] += 1
                if "received" in stages:
                    in_gateway = (stages["replied"] - stages["received"]) * 1000
                    rows.append({"total": (answered - sent) * 1000,
                                 "client->gateway": (stages["received"] - sent) * 1000,
                                 "prepare": stages["prepare"], "decision": stages["decision"],
                                 "gateway, other": in_gateway - stages["prepare"] - stages["decision"],
                                 "reply": (answered - stages["replied"]) * 1000})
        return {name: round(statistics.median(r[name] for r in rows), 3) for name in rows[0]} if rows else {}

    @contextlib.contextmanager
    def _echo_server(self):
        """The echo reference's server for this run: its port, and its pid (its CPU is the echo's)."""
        server = echo_server.spawn(self.home)
        try:
            assert server.stdout is not None
            yield int(server.stdout.readline()), server.pid
        finally:
            server.terminate()
            server.wait(10)

    @contextlib.asynccontextmanager
    async def _caller(self, port, payload):
        """`call(worker, n)` for closed-loop callers: one Echo call to a local server at `port`,
        carrying `payload(worker, n)`; the channel is up and answering before it is given."""
        creds = tls.channel_credentials(self.home, identities.OPERATOR)
        async with tls.secure_channel(f"127.0.0.1:{port}", creds, identities.OPERATOR) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Echo(echo_pb2.EchoMessage(payload=payload(0, 0)), wait_for_ready=True, timeout=10)

            async def call(worker, n):
                await stub.Echo(echo_pb2.EchoMessage(payload=payload(worker, n)), timeout=10)
                return "ok"
            yield call

    @contextlib.contextmanager
    def _stand_ins(self):
        """With --floor, do-nothing stand-ins of the payment's shape (floor.py), running: (their
        gateway's port, their pids); else None."""
        if not self.with_floor:
            yield None
            return
        stand_ins = floor.Floor(self.home)
        try:
            yield stand_ins.start(), stand_ins.pids()
        finally:
            stand_ins.stop()

    def _same_bank_share(self, users, concurrency):
        """The share of same-bank payments the many callers make: each worker's payer picks its
        payee evenly among the others, as `_payer` does."""
        payers = [u for u in users if self._payees(u, None)][:concurrency]
        shares = [len(self._payees(p, SAME_BANK)) / len(self._payees(p, None)) for p in payers]
        return sum(shares[w % len(shares)] for w in range(concurrency)) / concurrency if shares else 0.0

    def _progress(self, label):
        return lambda text: self.progress(f"{label:<22} {text}")

    async def _deployment_pids(self):
        """name -> pid of every running node, and of the supervisor."""
        status = await asyncio.to_thread(control.ControlClient(self.topology.layout).status)
        pids = {n.name: n.pid for n in status.nodes if n.pid}
        pids["supervisor"] = status.pid
        return pids, {n.name for n in status.nodes if n.kind in ("gateway", "bank")}

    async def _watch_memory(self, pids, peaks, stop):
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        while not stop.is_set():
            for name, proc in procs.items():
                with contextlib.suppress(psutil.Error):
                    peaks[name] = max(peaks.get(name, 0), proc.memory_info().rss)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def run(self):
        users = await self._accounts()
        if len(users) < 2:
            raise ValueError("fewer than two bench accounts could be set up")
        self.banks = await self._banks_of(users)
        single_seconds = min(self.seconds, 3.0)
        await self._payments(users, 1, 0.5, "warm-up")
        many = f"{self.concurrency} callers"
        share = self._same_bank_share(users, self.concurrency)  # the floor's many callers make the same mix
        with self._echo_server() as (port, echo_pid), self._stand_ins() as stand_ins:
            # every kind beside the echo (and the floor), in slices taken in turn: one machine for all
            async with contextlib.AsyncExitStack() as calls:
                side = functools.partial(_side, calls)
                singles = [await side("echo, 1 caller", self._caller(port, lambda w, n: PAYLOAD)),
                           await side("cross-bank, 1 caller", self._payer(users, 1, CROSS_BANK)),
                           await side("same-bank, 1 caller", self._payer(users, 1, SAME_BANK))]
                if stand_ins is not None:
                    singles += [await side("floor, cross-bank, 1 caller", self._caller(stand_ins[0], _lone(floor.CROSS_BANK))),
                                await side("floor, same-bank, 1 caller", self._caller(stand_ins[0], _lone(floor.SAME_BANK)))]
                await alternate(singles, single_seconds, SINGLE_SLICE, self.progress)
            stages = await self._stages(users)
            pids, measured = await self._deployment_pids()
            peaks, stop = {}, asyncio.Event()
            watcher = asyncio.create_task(self._watch_memory({n: pids[n] for n in measured}, peaks, stop))
            async with contextlib.AsyncExitStack() as calls:
                side = functools.partial(_side, calls)
                crowd = [await side(f"echo, {many}", self._caller(port, lambda w, n: PAYLOAD), self.concurrency,
                                    {"echo server": echo_pid}),
                         await side(f"payments, {many}", self._payer(users, self.concurrency), self.concurrency, pids)]
                if stand_ins is not None:
                    crowd.append(await side(f"floor, {many}", self._caller(stand_ins[0], _mix(share, self.concurrency)),
                                            self.concurrency, stand_ins[1]))
                await alternate(crowd, self.seconds, MANY_SLICE, self.progress)
            stop.set()
            await watcher
        echo_single, pay_single, same_single, *floor_singles = singles
        echo_many, pay_many, *floor_crowd = crowd
        elapsed = pay_many.span
        tracing = await trace_cost.measure(
            self.topology, lambda seconds, label, started, rate: self._payments(
                users, self.concurrency, seconds, label, started=started, rate=rate),
            pids, measured, self.seconds, self.concurrency, len(pay_many.samples) / elapsed if elapsed else None)
        figures = {
            "seconds": self.seconds, "concurrency": self.concurrency, "accounts": len(users),
            "payments": report.summarize(pay_many.samples, elapsed),
            "payments_by_kind": {kind: report.summarize([x for x in pay_many.samples if x.kind == kind], elapsed)
                                 for kind in (CROSS_BANK, SAME_BANK)},
            "payments_single": _summary(pay_single),
            "payments_single_same_bank": _summary(same_single),
            "stages_ms": stages,
            "echo": _summary(echo_many),
            "echo_single": _summary(echo_single),
            "rss_peak_mb": {name: round(rss / 2 ** 20, 1) for name, rss in sorted(peaks.items())},
            # many-caller phases, from the first call on (channels, TLS and logging in left out)
            "cpu_ms_per_payment": pay_many.cpu_ms(),
            "cpu_ms_per_echo": echo_many.cpu_ms(),
            # how many turns each kind took beside the others (alternate.py)
            "slices": {"many_callers": slices(self.seconds, MANY_SLICE),
                       "single_caller": slices(single_seconds, SINGLE_SLICE)},
            # the same payments with tracing on and off (strife/checks/bench/trace_cost.py)
            "tracing": tracing,
            # every answer of the run by outcome, warm-up and stage timing included
            "answered": {o: self.answered[o] for o in (Outcome.COMMITTED.value, Outcome.ABORTED.value)},
        }
        if floor_crowd:
            (floor_single, floor_same), (floor_many,) = floor_singles, floor_crowd
            figures["floor"] = {"same_bank_share": round(share, 3), "payments": _summary(floor_many),
                                "payments_single": _summary(floor_single),
                                "payments_single_same_bank": _summary(floor_same),
                                "cpu_ms_per_payment": floor_many.cpu_ms()}
        for judged in (figures, figures.get("floor")):
            if judged is not None:
                _against_echo(judged, figures["echo"]["per_s"], figures["echo_single"]["p50_ms"])
        self.echo_samples = echo_many.samples  # the plot's reference, beside the payments
        return figures, pay_many.samples
