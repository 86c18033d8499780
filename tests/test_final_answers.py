"""The first definite answer to a payment is final (design §5.7): the reply, every retry with the
same id, the history and every recovery path give exactly that answer, never a rewritten one.

The race tests run the gateway's real Coordinator with its real Store (SQLite in tmp_path) and a
real etcd. The banks are scripted links, so that events, not sleeps, decide which payment
finishes while the recovery pass is busy with another.
"""
import asyncio
import collections
import socket
import sqlite3
import subprocess
import types

import etcd3aio
import grpc
import pytest

from strife.client.gateway_client import GatewayClient
from strife.core import decisions
from strife.core.failpoints import FailpointFired, Failpoints
from strife.deployment.topology import load_deployment
from strife.launcher import chaos, etcd as etcd_launcher
from strife.nodes.gateway.banks import PhaseTwoRefused
from strife.nodes.gateway.coordinator import Coordinator
from strife.nodes.gateway.store import Payment, Store, fingerprint
from strife.rpc import cl_gw_pb2 as cl, gw_bank_pb2 as gb
from tests.helpers import prepared_holds, wait_for


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def etcd_endpoint(tmp_path):
    """A real single-member etcd (plain loopback: TLS is not what these tests are about)."""
    binary = etcd_launcher.find_binary(types.SimpleNamespace(etcd=types.SimpleNamespace(binary=None)))
    client_port, peer_port = _free_port(), _free_port()
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    proc = subprocess.Popen(
        [binary, "--name", "solo", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"solo={peer_url}", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"127.0.0.1:{client_port}"

    def answers():
        async def ping():
            async with etcd3aio.Etcd3Client([endpoint]) as etcd:
                await etcd.kv.get("/ping", timeout=1)
        try:
            asyncio.run(ping())
            return True
        except Exception:
            return proc.poll() is not None and pytest.fail("etcd exited at start")
    try:
        wait_for(answers, timeout=30, what="etcd to answer")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class ScriptedBank:
    """A bank link whose votes and phase-2 timing the test decides."""

    def __init__(self):
        self.refuse = set()       # txn ids voted NO (insufficient funds)
        self.refuse_phase2 = {}   # txn id -> how many phase-2 attempts to refuse first
        self.gates = {}           # txn id -> Event its phase 2 waits for
        self.arrivals = {}        # txn id -> Event set when its phase 2 arrives
        self.acknowledged = []    # txn ids whose phase 2 this bank acknowledged, in order

    def hold_phase2(self, txn_id):
        self.gates[txn_id] = asyncio.Event()

    def release_phase2(self, txn_id):
        self.gates[txn_id].set()

    def phase2_arrived(self, txn_id):
        return self.arrivals.setdefault(txn_id, asyncio.Event()).wait()

    async def prepare(self, leg):
        if leg.txn_id in self.refuse:
            return gb.VoteResult(vote=gb.NO, reason=gb.INSUFFICIENT_FUNDS, detail=f"{leg.account} cannot pay")
        return gb.VoteResult(vote=gb.YES)

    async def decide(self, txn_id, commit, account=None):
        self.arrivals.setdefault(txn_id, asyncio.Event()).set()
        if txn_id in self.gates:
            await self.gates[txn_id].wait()
        if self.refuse_phase2.get(txn_id):
            self.refuse_phase2[txn_id] -= 1
            raise PhaseTwoRefused("not now")
        self.acknowledged.append(txn_id)
        return gb.COMMITTED if commit else gb.ABORTED


class ScriptedBanks:
    def __init__(self, *names):
        self.banks = {name: ScriptedBank() for name in names}

    def __getitem__(self, name):
        return self.banks[name]

    def link(self, name):
        return self.banks.get(name)


def payment(txn_id, payer="alice", payee="bob", amount_minor=500):
    return Payment(txn_id=txn_id, fingerprint=fingerprint(payer, "bank1", payee, "bank2", amount_minor),
                   payer=payer, payer_bank="bank1", payee=payee, payee_bank="bank2", amount_minor=amount_minor)


def answer(result):
    return result.outcome, result.reason, result.detail


def recorded(store, txn_id):
    p = store.payment(txn_id)
    return p.status, p.reason, p.detail


def in_history(store, user, txn_id):
    p = next(p for p in store.history(user, 100) if p.txn_id == txn_id)
    return p.status, p.reason, p.detail


def run_with_coordinator(tmp_path, endpoint, scenario):
    """Run `scenario(coordinator, banks, failpoints)` against a real store and a real etcd."""
    async def main():
        store = Store(tmp_path / "gateway.db")
        banks = ScriptedBanks("bank1", "bank2")
        failpoints = Failpoints()
        async with etcd3aio.Etcd3Client([endpoint]) as etcd:
            coordinator = Coordinator(store, banks, etcd, types.SimpleNamespace(prepare_timeout=2.0, idempotency_retention=86400.0),
                                      failpoints)
            try:
                async with asyncio.timeout(60):
                    await scenario(coordinator, banks, failpoints)
            finally:
                for task in list(coordinator.retrying.values()):
                    task.cancel()
                await store.close()
    asyncio.run(main())


async def leave_pending(coordinator, failpoints, txn_id):
    """A payment the gateway dropped between its prepares and its decision: PENDING, and no
    coroutine executing it (what a crash, or an error at that step, leaves behind)."""
    failpoints.set("after-prepare", "error")
    with pytest.raises(FailpointFired):
        await coordinator.pay(payment(txn_id))
    failpoints.clear("after-prepare")
    assert coordinator.store.payment(txn_id).status == "PENDING"


def test_recovery_does_not_rewrite_an_answer_given_while_the_pass_was_busy(tmp_path, etcd_endpoint):
    """The pass snapshots [stuck, refused]; `refused` is answered INSUFFICIENT_FUNDS while the pass
    waits on phase 2 of `stuck`; when the pass reaches its old copy of `refused` it must leave it."""
    async def scenario(coordinator, banks, failpoints):
        store = coordinator.store
        await leave_pending(coordinator, failpoints, "stuck")
        # `refused`: bank1 votes NO; its abort at bank2 waits until the pass has taken its snapshot
        banks["bank1"].refuse.add("refused")
        banks["bank2"].hold_phase2("refused")
        paying = asyncio.ensure_future(coordinator.pay(payment("refused")))
        await banks["bank2"].phase2_arrived("refused")
        # the recovery pass: `stuck` first (older), whose abort at bank2 is held too
        banks["bank2"].hold_phase2("stuck")
        recovering = asyncio.ensure_future(coordinator.recover())
        await banks["bank2"].phase2_arrived("stuck")
        banks["bank2"].release_phase2("refused")
        first = answer(await paying)
        assert first == ("ABORTED", "INSUFFICIENT_FUNDS", "bank bank1: alice cannot pay")
        banks["bank2"].release_phase2("stuck")
        await recovering
        for task in list(coordinator.retrying.values()):
            await task
        await coordinator.recover()  # a later pass finds nothing to change either

        assert recorded(store, "refused") == first
        assert answer(await coordinator.pay(payment("refused"))) == first
        assert in_history(store, "alice", "refused") == first
        # phase 2 of `refused` went once to each bank: the pass did not send it again
        assert banks["bank1"].acknowledged.count("refused") == 1
        assert banks["bank2"].acknowledged.count("refused") == 1
        assert recorded(store, "stuck") == ("ABORTED", "RECOVERED_ABORT", "the gateway stopped before deciding")
        assert store.unfinished() == []

    run_with_coordinator(tmp_path, etcd_endpoint, scenario)


def test_recovery_does_not_repeat_phase_2_that_a_retry_finished_meanwhile(tmp_path, etcd_endpoint):
    """`refused` is answered, its phase 2 at bank2 is refused once and left to the retry task; the
    pass snapshots it, the retry completes while the pass waits on `stuck`: nothing is left to do."""
    async def scenario(coordinator, banks, failpoints):
        store = coordinator.store
        await leave_pending(coordinator, failpoints, "stuck")
        banks["bank1"].refuse.add("refused")
        banks["bank2"].refuse_phase2["refused"] = 1
        banks["bank2"].hold_phase2("refused")
        paying = asyncio.ensure_future(coordinator.pay(payment("refused")))
        await banks["bank2"].phase2_arrived("refused")
        banks["bank2"].hold_phase2("stuck")
        recovering = asyncio.ensure_future(coordinator.recover())
        await banks["bank2"].phase2_arrived("stuck")
        banks["bank2"].release_phase2("refused")
        first = answer(await paying)
        await coordinator.retrying["refused"]  # the retry acknowledges at bank2 and is done
        assert store.payment("refused").phase2_done
        told = [banks[b].acknowledged.count("refused") for b in ("bank1", "bank2")]
        banks["bank2"].release_phase2("stuck")
        await recovering

        assert recorded(store, "refused") == first == ("ABORTED", "INSUFFICIENT_FUNDS", "bank bank1: alice cannot pay")
        assert [banks[b].acknowledged.count("refused") for b in ("bank1", "bank2")] == told  # none from the pass

    run_with_coordinator(tmp_path, etcd_endpoint, scenario)


def test_an_answer_lost_to_a_banks_resolver_stays_what_was_first_said(tmp_path, etcd_endpoint):
    """A bank's in-doubt resolver recorded ABORT before the gateway decided: the gateway answers
    RECOVERED_ABORT with its own detail, and recovery never swaps that detail for another."""
    async def scenario(coordinator, banks, failpoints):
        store = coordinator.store
        assert await decisions.abort_as_bank(coordinator.etcd, "bank1", "late") == decisions.ABORT
        first = answer(await coordinator.pay(payment("late")))
        assert first == ("ABORTED", "RECOVERED_ABORT", "aborted by in-doubt resolution before the gateway decided")
        await coordinator.recover()
        assert recorded(store, "late") == first
        assert answer(await coordinator.pay(payment("late"))) == first

    run_with_coordinator(tmp_path, etcd_endpoint, scenario)


def test_the_store_never_overwrites_a_final_answer(tmp_path):
    async def main():
        store = Store(tmp_path / "gateway.db")
        try:
            p = payment("once")
            await store.begin(p)
            await store.finish(p, "ABORTED", "INSUFFICIENT_FUNDS", "bank bank1: no", phase2_done=False)
            stale = payment("once")  # a copy read before the answer was recorded
            await store.finish(stale, "ABORTED", "RECOVERED_ABORT", "the gateway stopped before deciding",
                               phase2_done=True)
            # the copy now holds what is recorded; phase 2 done is still news worth keeping
            assert (stale.status, stale.reason, stale.detail) == ("ABORTED", "INSUFFICIENT_FUNDS", "bank bank1: no")
            assert recorded(store, "once") == ("ABORTED", "INSUFFICIENT_FUNDS", "bank bank1: no")
            assert store.payment("once").phase2_done == 1
        finally:
            await store.close()
    asyncio.run(main())


# ---- end to end: a real deployment under load, with the faults of the original report ----

REFUSED_CENTS = 5000  # carol (10.00 at bank1) can never pay this: bank1 votes NO


class Load:
    """Payments in a loop from several workers, each one's first definite answer recorded."""

    def __init__(self):
        self.first_answers = {}   # txn id -> (payer, outcome, reason, detail)
        self.errors = []          # txn ids that got no answer (the armed error): nothing was promised
        self.stop = asyncio.Event()
        self._waiting = []        # (predicate, Event)

    def until(self, predicate):
        event = asyncio.Event()
        self._waiting.append((predicate, event))
        self._check()
        return event.wait()

    def _check(self):
        for predicate, event in self._waiting:
            if predicate():
                event.set()

    async def pay(self, client, payee, cents, prefix):
        n = 0
        while not self.stop.is_set():
            n += 1
            txn_id = f"{prefix}-{n}"
            try:
                reply = await client.pay(payee, cents, txn_id, timeout=10)
            except grpc.aio.AioRpcError:
                self.errors.append(txn_id)
            else:
                if reply.outcome != cl.IN_PROGRESS:
                    self.first_answers[txn_id] = (client.user, reply.outcome, reply.reason, reply.detail)
            self._check()

    def refused(self):
        return sum(1 for _, _, reason, _ in self.first_answers.values() if reason == cl.INSUFFICIENT_FUNDS)


def _gateway_unfinished(home):
    db = sqlite3.connect(f"file:{home / 'state' / 'gateway' / 'gateway.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM payments WHERE phase2_done = 0").fetchone()[0]
    finally:
        db.close()


def test_answers_given_under_load_with_faults_never_change(live):
    """bank2 acknowledges aborts slowly and the gateway briefly fails between prepare and decision
    (payments it leaves PENDING for the recovery pass), while refused and committed payments flow.
    Afterwards every answer a client got is what a retry with the same id and the history say."""
    d = live
    assert d.cli("chaos", "--failpoint", "bank2:abort=delay:1500ms").returncode == 0
    load = Load()

    async def run():
        topology = load_deployment(d.home)
        async with GatewayClient(topology, "carol") as carol, GatewayClient(topology, "alice") as alice, \
                chaos.AdminClient(topology, "gateway") as gateway:
            workers = [load.pay(carol, "bob", REFUSED_CENTS, f"refused{w}") for w in range(12)]
            # alice pays carol: both at bank1, so these commit whatever bank2 does
            workers += [load.pay(alice, "carol", 1, f"paid{w}") for w in range(2)]
            running = asyncio.gather(*workers)
            await load.until(lambda: load.refused() >= 5)  # the load is flowing
            await gateway.set("after-prepare", "error")
            await load.until(lambda: len(load.errors) >= 10)
            await gateway.clear()
            # refused payments in flight while the recovery pass works through the PENDING ones
            refused = load.refused()
            await load.until(lambda: load.refused() >= refused + 30)
            load.stop.set()
            await running
    asyncio.run(run())
    assert d.cli("chaos", "--clear", "bank2").returncode == 0
    first_answers = load.first_answers
    reasons = collections.Counter(cl.AbortReason.Name(reason) for _, _, reason, _ in first_answers.values())
    # commits beside the refused ones (refusals are answered at the decision, before bank2's slow abort)
    assert reasons["REASON_UNSPECIFIED"] >= 5, reasons
    wait_for(lambda: _gateway_unfinished(d.home) == 0 and prepared_holds(d.home) == 0, timeout=60,
             what="recovery and phase 2 of every payment finished")

    async def check():
        changed = []
        topology = load_deployment(d.home)
        for user in ("carol", "alice"):
            async with GatewayClient(topology, user) as client:
                history = {p.txn_id: (user, p.outcome, p.reason, p.detail)
                           for p in (await client.history(limit=1000)).payments}
                assert len(history) < 1000, "the history check needs every payment of the run"
                for txn_id, first in first_answers.items():
                    if first[0] != user:
                        continue
                    reply = await (client.pay("bob", REFUSED_CENTS, txn_id) if user == "carol"
                                   else client.pay("carol", 1, txn_id))
                    again = (user, reply.outcome, reply.reason, reply.detail)
                    if again != first or history.get(txn_id) != first:
                        changed.append((txn_id, first, again, history.get(txn_id)))
        return changed
    changed = asyncio.run(check())
    assert not changed, f"{len(changed)} of {len(first_answers)} answers changed, e.g. {changed[:3]}"
