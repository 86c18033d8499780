"""Offline payments: queued in the client's durable outbox, delivered once, in order, with their ids.
The `strife` commands run in this process (`Deployment.cli`)."""
import json
import re
import sqlite3
import time

from strife.client.outbox import Outbox
from strife.deployment.layout import Layout
from tests.helpers import pending_payments, settled, wait_for


def gateway_payments(home, txn_ids):
    db = sqlite3.connect(f"file:{home / 'state' / 'gateway' / 'gateway.db'}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(txn_ids))
        return db.execute(f"SELECT txn_id, status FROM payments WHERE txn_id IN ({marks}) ORDER BY created_at",
                          txn_ids).fetchall()
    finally:
        db.close()


def outbox(d, user):
    return json.loads(d.cli("client", user, "outbox", "--json").stdout)


def queue(d, payer, payee, amount):
    result = d.cli("client", payer, "pay", payee, amount, "--wait", "1", "--json")
    assert result.returncode == 4, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "queued"
    return answer["txn_id"]


def test_queued_payments_survive_a_client_restart_and_commit_once_in_order(live):
    d = live
    before = settled(d.home)
    assert d.cli("chaos", "--pause", "gateway").returncode == 0
    ids = [queue(d, "alice", "bob", amount) for amount in ("1.00", "2.00", "3.00")]
    assert [e["txn_id"] for e in outbox(d, "alice")] == ids
    history = json.loads(d.cli("client", "alice", "history", "--json").stdout)  # gateway away: local rows
    assert {r["txn_id"] for r in history if r["status"] in ("queued", "in-flight")} == set(ids)

    old_pid = d.node("alice")["pid"]
    assert d.cli("chaos", "--kill", "alice").returncode == 0
    wait_for(lambda: (n := d.node("alice"))["state"] == "RUNNING" and n["pid"] not in (None, old_pid), what="alice restarted")
    assert [e["txn_id"] for e in outbox(d, "alice")] == ids  # nothing lost with the process

    assert d.cli("chaos", "--resume", "gateway").returncode == 0
    wait_for(lambda: pending_payments(d.home, "alice") == [], timeout=60, what="the outbox delivered")
    assert outbox(d, "alice") == []
    assert gateway_payments(d.home, ids) == [(i, "COMMITTED") for i in ids]  # once each, in order
    after = settled(d.home)
    assert after["alice"] == before["alice"] - 600 and after["bob"] == before["bob"] + 600
    history = json.loads(d.cli("client", "alice", "history", "--json").stdout)
    assert {r["txn_id"]: r["status"] for r in history if r["txn_id"] in ids} == dict.fromkeys(ids, "committed")
    assert "payment " + ids[2] in (d.home / "logs" / "alice.log").read_text()  # the node says what happened


def test_a_queued_payment_that_cannot_be_paid_is_reported_aborted_not_retried(live):
    d = live
    before = settled(d.home)
    d.cli("chaos", "--pause", "gateway")
    txn = queue(d, "alice", "bob", "999.00")  # alice has 100.00
    d.cli("chaos", "--resume", "gateway")
    wait_for(lambda: pending_payments(d.home, "alice") == [], timeout=60, what="a definite outcome")
    assert outbox(d, "alice") == []
    history = json.loads(d.cli("client", "alice", "history", "--json").stdout)
    row = next(r for r in history if r["txn_id"] == txn)
    assert row["status"] == "aborted" and row["reason"] == "insufficient_funds"
    assert settled(d.home) == before
    # asking again with the same id reports the stored outcome; it does not queue it anew
    again = d.cli("client", "alice", "pay", "bob", "999.00", "--id", txn, "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["outcome"] == "aborted"


def test_a_client_killed_mid_send_pays_exactly_once(live):
    d = live
    before, restarts = settled(d.home), d.node("alice")["restarts"]
    # the node dies after the gateway answered and before its outbox knows: the worst moment
    assert d.cli("chaos", "--failpoint", "alice:after-send=crash").returncode == 0
    result = d.cli("client", "alice", "pay", "bob", "4.00", "--wait", "60", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "committed"
    assert d.node("alice")["restarts"] == restarts + 1
    assert gateway_payments(d.home, [answer["txn_id"]]) == [(answer["txn_id"], "COMMITTED")]
    after = settled(d.home)
    assert after["alice"] == before["alice"] - 400 and after["bob"] == before["bob"] + 400


def test_without_a_client_node_the_cli_delivers_on_its_next_call(live):
    d = live  # dave's node is restart: 'no'
    before = settled(d.home)
    d.cli("chaos", "--kill", "dave")
    wait_for(lambda: d.node("dave")["state"] == "EXITED", what="dave's node gone")
    try:
        d.cli("chaos", "--pause", "gateway")
        txn = queue(d, "dave", "bob", "5.00")
        d.cli("chaos", "--resume", "gateway")
        assert outbox(d, "dave")[0]["txn_id"] == txn
        # a command while its next try is not due says why it is queued and when it goes
        box = Outbox(Layout(d.home).outbox("dave"))
        try:
            box.retry_later(txn, "unavailable: the gateway was paused", time.time() + 60)
            early = d.cli("client", "dave", "balance")
            assert early.returncode == 0, early.stderr
            assert re.search(r"1 still queued \(unavailable: the gateway was paused; its next try is due in "
                             r"(59|60)\.\d s\)", early.stderr), early.stderr
            box.retry_later(txn, "unavailable: the gateway was paused", time.time())
        finally:
            box.close()
        # due now: the next call sends it
        result = d.cli("client", "dave", "balance", "--json")
        assert result.returncode == 0
        assert "delivering 1 queued payment" in result.stderr and f"{txn} to bob 5.00: committed" in result.stderr
        assert json.loads(result.stdout)["balance_minor"] == before["dave"] - 500
        assert outbox(d, "dave") == []
        # the command, as dave's sender, wrote the client's steps of the payment's trace (the
        # gateway's and banks' go out within timeline.FLUSH_EVERY)
        def dave_steps():
            trace = d.cli("trace", txn, "--json")
            return trace.returncode == 0 and [s for s in json.loads(trace.stdout)["steps"] if s["node"] == "dave"]
        steps = wait_for(lambda: len(dave_steps() or []) >= 2 and dave_steps(), what="dave's steps in the trace")
        assert [s["step"] for s in steps][:1] == ["queued"] and steps[-1]["step"] == "send", steps
        assert steps[-1]["result"] == "committed", steps
    finally:
        assert d.cli("restart", "dave").returncode == 0  # as the shared deployment was
