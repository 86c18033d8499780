"""Crashes inside two-phase commit: the decision in etcd settles every hold, exactly once. The `strife`
commands run in this process (`Deployment.cli`)."""
import asyncio
import json
import os
import signal

import grpc

from strife.client.gateway_client import GatewayClient
from strife.core import decisions
from strife.deployment.topology import load_deployment
from strife.rpc import cl_gw_pb2 as cl
from tests.helpers import PAYMENT_TOPOLOGY, balances, decision_of, ledger_rows, prepared_holds, settled, wait_for


def with_gateway(settings):
    return PAYMENT_TOPOLOGY.replace("gateway: {}", f"gateway: {settings}")


def test_gateway_crash_after_the_decision_completes_on_restart(live):
    d = live
    before, restarts = settled(d.home), d.node("gateway")["restarts"]
    assert d.cli("chaos", "--failpoint", "gateway:after-decision=crash").returncode == 0  # its next payment
    txn = "crash-after-decision-1"
    result = d.cli("client", "alice", "pay", "bob", "7.00", "--id", txn, "--wait", "0")
    assert result.returncode == 4, result.stderr  # queued; alice's client node delivers it
    wait_for(lambda: decision_of(d.home, txn) == decisions.COMMIT, what="the COMMIT decision")
    wait_for(lambda: d.node("gateway")["restarts"] > restarts and d.node("gateway")["state"] == "RUNNING",
             what="gateway restarted")
    wait_for(lambda: prepared_holds(d.home) == 0, timeout=30, what="phase 2 re-driven after restart")
    after = balances(d.home)
    assert after["alice"] == before["alice"] - 700 and after["bob"] == before["bob"] + 700
    again = d.cli("client", "alice", "pay", "bob", "7.00", "--id", txn, "--json", "--wait", "60")
    assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "committed"
    assert balances(d.home) == after


def test_gateway_crash_before_deciding_aborts_on_restart(live):
    d = live
    before = settled(d.home)
    assert d.cli("chaos", "--failpoint", "gateway:after-prepare=crash").returncode == 0
    txn = "crash-after-prepare-1"
    assert d.cli("client", "alice", "pay", "bob", "7.00", "--id", txn, "--wait", "0").returncode == 4
    wait_for(lambda: decision_of(d.home, txn) == decisions.ABORT, timeout=30, what="recovery decided ABORT")
    wait_for(lambda: prepared_holds(d.home) == 0, timeout=30, what="holds released")
    assert balances(d.home) == before
    # A payment that cannot reach the gateway is queued (4) at once. In this process gRPC shares one
    # connection to the gateway between commands, and after the crash it reconnects with a backoff
    # (up to 2 s, strife/client/gateway_client.py) that can outlast the restart: seen in CI.
    def answered():
        again = d.cli("client", "alice", "pay", "bob", "7.00", "--id", txn, "--json", "--wait", "60")
        return again if again.returncode != 4 else None
    again = wait_for(answered, timeout=30, what="an answer from the restarted gateway")
    assert again.returncode == 1 and json.loads(again.stdout)["reason"] == "recovered_abort"


def test_a_bank_resolves_its_in_doubt_hold_when_the_gateway_never_returns(deployment):
    d = deployment(with_gateway("{restart: 'no', failpoints: {after-prepare: crash}}")
                   .replace("hold_timeout: 6s", "hold_timeout: 3s"))  # what this test waits for
    d.up()
    before = balances(d.home)
    txn = "gateway-gone-1"
    assert d.cli("client", "alice", "pay", "bob", "7.00", "--id", txn, "--wait", "0").returncode == 4
    wait_for(lambda: d.node("gateway")["state"] == "EXITED", what="the gateway crashed for good")
    assert prepared_holds(d.home) == 2  # both banks voted yes and hold the money
    # hold_timeout is 3s: each bank finds no decision, records ABORT itself and releases its hold
    wait_for(lambda: prepared_holds(d.home) == 0, timeout=40, what="in-doubt holds resolved by the banks")
    assert decision_of(d.home, txn) == decisions.ABORT
    assert balances(d.home) == before
    for bank in ("bank1", "bank2"):
        assert ledger_rows(d.home, bank, "SELECT state FROM holds WHERE txn_id = ?", (txn,)) == [("ABORTED",)]


def test_a_bank_killed_after_voting_yes_commits_on_restart(live):
    d = live
    before, restarts = settled(d.home), d.node("bank2")["restarts"]
    # bank2 votes yes, the decision is COMMIT, and bank2 dies as the commit arrives
    assert d.cli("chaos", "--failpoint", "bank2:commit=crash").returncode == 0
    result = d.cli("client", "alice", "pay", "bob", "6.00", "--json", "--wait", "30")
    answer = json.loads(result.stdout)
    assert result.returncode == 0 and answer["outcome"] == "committed"  # the decision is the commit point
    txn = answer["txn_id"]
    assert decision_of(d.home, txn) == decisions.COMMIT
    wait_for(lambda: d.node("bank2")["restarts"] == restarts + 1 and d.node("bank2")["state"] == "RUNNING",
             what="bank2 restarted")
    wait_for(lambda: ledger_rows(d.home, "bank2", "SELECT state FROM holds WHERE txn_id = ?", (txn,))
             == [("COMMITTED",)], timeout=30, what="the gateway's retried commit applied after restart")
    after = settled(d.home)
    assert after["alice"] == before["alice"] - 600 and after["bob"] == before["bob"] + 600


def test_a_bank_killed_with_its_hold_written_aborts_as_recorded(live):
    d = live
    before = settled(d.home)
    # bank2 writes its hold durably and dies before its YES leaves: the gateway decides ABORT
    assert d.cli("chaos", "--failpoint", "bank2:prepare=crash").returncode == 0
    result = d.cli("client", "alice", "pay", "bob", "6.00", "--json", "--wait", "30")
    answer = json.loads(result.stdout)
    assert result.returncode == 1 and answer["reason"] == "bank_unavailable", answer
    txn = answer["txn_id"]
    assert decision_of(d.home, txn) == decisions.ABORT
    wait_for(lambda: ledger_rows(d.home, "bank2", "SELECT state FROM holds WHERE txn_id = ?", (txn,))
             == [("ABORTED",)], timeout=30, what="bank2's surviving hold released after restart")
    assert balances(d.home) == before and prepared_holds(d.home) == 0


def pay_as_soon_as_the_gateway_answers(home, txn_id):
    """Connect to the (re)starting gateway, pay at once, and retry UNAVAILABLE with the same id as
    a client does: every answer seen, in order, the definite one last."""
    async def go():
        seen = []
        async with GatewayClient(load_deployment(home), "alice") as client:
            await asyncio.wait_for(client.channel.channel_ready(), timeout=30)  # its port is open
            while True:
                try:
                    answer = await client.pay("bob", 100, txn_id, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    seen.append((exc.code(), exc.details()))
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or len(seen) > 200:
                        return seen
                    await asyncio.sleep(0.05)  # the client's retry pause
                    continue
                return [*seen, answer]
    return asyncio.run(go())


def test_a_restarted_gateway_takes_payments_only_once_it_knows_the_banks_and_a_dead_bank_holds_nothing(deployment):
    # The gateway's port opens 4s before it reads the list of banks (as when etcd is slow to answer).
    # bank2 is not restarted: at the end it dies for good (one deployment for both stories).
    d = deployment(with_gateway("{failpoints: {before-banks: 'delay:4s'}}").replace("bank2: {}", "bank2: {restart: 'no'}"))
    d.up()
    old_pid = d.node("gateway")["pid"]
    assert d.cli("chaos", "--kill", "gateway").returncode == 0
    wait_for(lambda: d.node("gateway")["pid"] not in (None, old_pid), what="a new gateway process")
    before = balances(d.home)

    seen = pay_as_soon_as_the_gateway_answers(d.home, "during-restart")
    # reached while it did not know the banks yet: told to come back, not given an abort
    assert seen[0] == (grpc.StatusCode.UNAVAILABLE, "the gateway is starting; try again"), seen[0]
    assert seen[-1].outcome == cl.COMMITTED, seen[-1]
    assert all(answer == seen[0] for answer in seen[:-1])
    wait_for(lambda: balances(d.home) == dict(before, alice=before["alice"] - 100, bob=before["bob"] + 100),
             what="the payment applied at both banks")

    # healthy means ready: the first payment after it reports SERVING commits
    wait_for(lambda: d.node("gateway")["health"] == "SERVING", what="the gateway healthy again")
    first = d.cli("client", "alice", "pay", "bob", "1.00", "--json", "--wait", "30")
    assert first.returncode == 0 and json.loads(first.stdout)["outcome"] == "committed", first.stdout + first.stderr

    # A dead bank makes payments abort and holds nothing.
    settled(d.home)
    before = balances(d.home)
    os.killpg(d.node("bank2")["pid"], signal.SIGKILL)
    wait_for(lambda: d.node("bank2")["state"] == "EXITED", what="bank2 down")
    result = d.cli("client", "alice", "pay", "bob", "5.00", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["reason"] == "bank_unavailable"
    assert settled(d.home) == before  # alice's hold is released by phase 2, after the answer
    # payments that do not involve the dead bank go on
    assert d.cli("client", "alice", "pay", "carol", "5.00").returncode == 0
