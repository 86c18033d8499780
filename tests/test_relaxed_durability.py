"""What is written without an fsync (phase 2 at the banks, the gateway's records; WAL with
synchronous=NORMAL) survives a process crash: killed right after phase 2, nothing is lost."""
import json
import os
import signal
import sqlite3

from strife.deployment.layout import Layout
from tests.helpers import balances, ledger_rows, settled, wait_for


def gateway_rows(home, sql):
    db = sqlite3.connect(f"file:{Layout(home).gateway_db('gateway')}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_bank_and_the_gateway_killed_right_after_phase_2_lose_no_outcome(live):
    d = live
    before = settled(d.home)
    paid = []
    for i, (payee, cents) in enumerate([("bob", 101), ("carol", 102), ("bob", 103), ("carol", 104)]):
        txn = f"relaxed-{os.getpid()}-{i}"
        result = d.cli("client", "alice", "pay", payee, f"{cents / 100:.2f}", "--id", txn, "--json", "--wait", "30")
        assert result.returncode == 0 and json.loads(result.stdout)["outcome"] == "committed", result.stdout
        paid.append((txn, payee, cents))
    ids = ", ".join(f"'{txn}'" for txn, _, _ in paid)
    # phase 2 acknowledged by the banks and recorded by the gateway: the moment to crash
    wait_for(lambda: gateway_rows(d.home, f"SELECT COUNT(*) FROM payments WHERE txn_id IN ({ids}) "
                                          "AND phase2_done = 1")[0][0] == len(paid), what="phase 2 recorded")
    nodes = {name: d.node(name) for name in ("bank1", "bank2", "gateway")}
    for node in nodes.values():
        os.kill(node["pid"], signal.SIGKILL)
    wait_for(lambda: all(d.node(n)["state"] == "RUNNING" and d.node(n)["pid"] not in (None, nodes[n]["pid"]) for n in nodes),
             timeout=60, what="bank1, bank2 and the gateway running again")

    cross = [txn for txn, payee, _ in paid if payee == "bob"]
    same = [txn for txn, payee, _ in paid if payee == "carol"]
    for txn in cross:
        assert sorted(ledger_rows(d.home, "bank1", "SELECT direction, state FROM holds WHERE txn_id = ?", (txn,))
                      + ledger_rows(d.home, "bank2", "SELECT direction, state FROM holds WHERE txn_id = ?", (txn,))) \
            == [("CREDIT", "COMMITTED"), ("DEBIT", "COMMITTED")]
    for txn in same:
        assert ledger_rows(d.home, "bank1", "SELECT outcome FROM transfers WHERE txn_id = ?", (txn,)) == [("COMMITTED",)]
    assert gateway_rows(d.home, f"SELECT COUNT(*) FROM payments WHERE txn_id IN ({ids}) AND status = 'COMMITTED' "
                                "AND phase2_done = 1")[0][0] == len(paid)
    after = balances(d.home)
    assert after["alice"] == before["alice"] - 410
    assert after["bob"] == before["bob"] + 204 and after["carol"] == before["carol"] + 206
    for txn, payee, cents in paid:  # every answer stands on retry
        again = d.cli("client", "alice", "pay", payee, f"{cents / 100:.2f}", "--id", txn, "--json", "--wait", "30")
        assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "committed"
    assert balances(d.home) == after
    assert d.cli("verify").returncode == 0
