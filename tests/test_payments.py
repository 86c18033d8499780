"""Payments end to end: the real CLI and gateway, two banks, etcd decisions, SQLite ledgers on disk.
The CLI runs in this process (`Deployment.cli`: its main, output and exit code, without a process
start each; tests/test_cli_contract.py runs payments as processes of their own too)."""
import asyncio
import json
import os
import signal
import time
import uuid

from strife.client.gateway_client import GatewayClient
from strife.deployment.topology import load_deployment
from tests.helpers import decision_of, ledger_rows, prepared_holds, settled, wait_for


def pay(d, payer, payee, amount, *extra):
    result = d.cli("client", payer, "pay", payee, amount, "--json", *extra)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else None), result.stderr


def test_payment_between_two_banks_moves_exact_cents(live):
    before = settled(live.home)
    code, answer, _ = pay(live, "alice", "bob", "12.34")
    assert code == 0 and answer["outcome"] == "committed" and answer["amount_minor"] == 1234
    # answered at the decision: a read that begins now shows it, whether or not phase 2 has landed
    for user in ("alice", "bob"):
        shown = json.loads(live.cli("client", user, "balance", "--json").stdout)["balance_minor"]
        assert shown == before[user] + (1234 if user == "bob" else -1234)
    history = json.loads(live.cli("client", "bob", "history", "--json").stdout)
    assert history[0]["txn_id"] == answer["txn_id"] and history[0]["status"] == "committed"
    for bank in ("bank1", "bank2"):
        wait_for(lambda: ledger_rows(live.home, bank, "SELECT state FROM holds WHERE txn_id = ?", (answer["txn_id"],))
                 == [("COMMITTED",)], what=f"phase 2 at {bank}")
    after = settled(live.home)
    assert after["alice"] == before["alice"] - 1234 and after["bob"] == before["bob"] + 1234
    assert sum(after.values()) == sum(before.values())


def test_payment_within_one_bank_is_one_transfer_with_no_hold_and_no_decision(live):
    before = settled(live.home)
    code, answer, _ = pay(live, "carol", "alice", "0.5")
    assert code == 0 and answer["outcome"] == "committed"
    after = settled(live.home)
    assert after["carol"] == before["carol"] - 50 and after["alice"] == before["alice"] + 50
    txn = answer["txn_id"]
    assert ledger_rows(live.home, "bank1", "SELECT payer, payee, amount_minor, outcome FROM transfers WHERE txn_id = ?",
                       (txn,)) == [("carol", "alice", 50, "COMMITTED")]
    assert ledger_rows(live.home, "bank1", "SELECT COUNT(*) FROM holds WHERE txn_id = ?", (txn,)) == [(0,)]
    assert decision_of(live.home, txn) is None
    again = pay(live, "carol", "alice", "0.5", "--id", txn)  # a retry is answered from the bank's record
    assert again[0] == 0 and again[1]["outcome"] == "committed" and settled(live.home) == after
    other_terms = pay(live, "carol", "alice", "0.51", "--id", txn)
    assert other_terms[0] == 2 and "idempotency_error" in other_terms[2] and settled(live.home) == after


def test_same_id_five_times_in_sequence_debits_once(live):
    before = settled(live.home)
    txn = str(uuid.uuid4())
    answers = [pay(live, "alice", "bob", "1.00", "--id", txn) for _ in range(5)]
    assert all(code == 0 and a["outcome"] == "committed" and a["txn_id"] == txn for code, a, _ in answers)
    after = settled(live.home)
    assert after["alice"] == before["alice"] - 100 and after["bob"] == before["bob"] + 100


def test_same_id_five_times_concurrently_debits_once(live):
    before = settled(live.home)
    txn = str(uuid.uuid4())
    topology = load_deployment(live.home)

    async def burst():
        async with GatewayClient(topology, "alice") as client:
            return await asyncio.gather(*(client.pay("bob", 200, txn) for _ in range(5)))
    answers = asyncio.run(burst())
    assert {a.txn_id for a in answers} == {txn}
    assert all(a.outcome == 1 for a in answers), answers  # COMMITTED
    after = settled(live.home)
    assert after["alice"] == before["alice"] - 200 and after["bob"] == before["bob"] + 200
    assert len(ledger_rows(live.home, "bank1", "SELECT 1 FROM holds WHERE txn_id = ?", (txn,))) == 1


def test_same_id_with_another_amount_is_refused(live):
    txn = str(uuid.uuid4())
    assert pay(live, "alice", "bob", "1.00", "--id", txn)[0] == 0
    before = settled(live.home)
    code, _, err = pay(live, "alice", "bob", "2.00", "--id", txn)
    assert code == 2 and "idempotency_error" in err
    code, _, err = pay(live, "alice", "carol", "1.00", "--id", txn)
    assert code == 2 and "idempotency_error" in err
    assert settled(live.home) == before


def test_insufficient_funds_aborts_and_releases_both_holds(live):
    before = settled(live.home)
    code, answer, _ = pay(live, "bob", "alice", "999.00")
    assert code == 1 and answer["outcome"] == "aborted" and answer["reason"] == "insufficient_funds"
    assert settled(live.home) == before
    assert prepared_holds(live.home) == 0
    available = json.loads(live.cli("client", "bob", "balance", "--json").stdout)
    assert available["available_minor"] == available["balance_minor"] == before["bob"]
    # the credit side at bank1 may have been prepared before bob's NO arrived; if so it was aborted
    for (state,) in ledger_rows(live.home, "bank1", "SELECT state FROM holds WHERE txn_id = ?", (answer["txn_id"],)):
        assert state == "ABORTED"


def test_demo_credentials_are_owner_only(live):
    import stat
    path = live.home / "state" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_text())) >= {"admin", "alice", "bob", "carol"}


def test_no_password_in_any_log(live):
    pay(live, "alice", "bob", "0.01")
    live.cli("client", "alice", "balance")
    credentials = json.loads((live.home / "state" / "credentials.json").read_text())
    logs = {p.name: p.read_text() for p in (live.home / "logs").glob("*.log")}
    assert "gateway.log" in logs and "InitiateTransaction" in logs["gateway.log"]
    for user, password in credentials.items():
        for name, text in logs.items():
            assert password not in text, f"{user}'s password appears in {name}"
    for name, text in logs.items():
        assert "PRIVATE KEY" not in text, name


def test_a_paused_bank_makes_the_payment_abort_within_the_timeout(live):
    before = settled(live.home)
    bank2 = live.node("bank2")
    os.killpg(bank2["pid"], signal.SIGSTOP)
    try:
        began = time.monotonic()
        code, answer, _ = pay(live, "alice", "bob", "3.00")
        elapsed = time.monotonic() - began
    finally:
        os.killpg(bank2["pid"], signal.SIGCONT)
    assert code == 1 and answer["reason"] == "bank_unavailable", answer
    assert elapsed < 1.5 + 5, elapsed  # prepare_timeout plus process start-up, not forever
    # alice's hold at bank1 and bank2's (if its prepare ran late) are released by phase 2, after the answer
    wait_for(lambda: prepared_holds(live.home) == 0, timeout=20, what="every hold released")
    assert settled(live.home) == before


def test_a_balance_whose_bank_does_not_answer_blames_the_bank_not_the_user(live):
    """The gateway answers for a bank that does not: the user is told which bank (exit 1), not
    that the gateway refused their connection or is down."""
    bank2 = live.node("bank2")
    os.killpg(bank2["pid"], signal.SIGSTOP)
    try:
        result = live.cli("client", "bob", "balance")
    finally:
        os.killpg(bank2["pid"], signal.SIGCONT)
    assert result.returncode == 1, result
    assert "bank bank2 is not available" in result.stderr, result.stderr
    assert "certificate" not in result.stderr and "is Strife up" not in result.stderr, result.stderr
    # answered once, not retried by the client until bank2's registration lapsed (5 s): bank2 is
    # still listed, and answers as soon as it runs again
    again = live.cli("client", "bob", "balance")
    assert again.returncode == 0, again.stderr


def test_history_says_why_a_payment_was_rejected(live):
    refused = live.cli("client", "alice", "pay", "nobody", "1", "--id", "history-rejected-1")
    assert refused.returncode == 2, refused
    [row] = [r for r in json.loads(live.cli("client", "alice", "history", "--json").stdout)
             if r["txn_id"] == "history-rejected-1"]
    assert (row["status"], row["reason"]) == ("rejected", "")
    assert row["detail"] == "payee: unknown payee 'nobody'", row
    [line] = [li for li in live.cli("client", "alice", "history").stdout.splitlines() if "history-rejected-1" in li]
    assert line.split()[2] == "rejected" and line.endswith("payee: unknown payee 'nobody'"), line
