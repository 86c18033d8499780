"""The bank ledger's SQL on a real SQLite file, without a server."""
import itertools

from strife.nodes.bank import ledger as L


def vm_steps(db, action):
    """SQLite virtual-machine steps (in units of 10) that `action` takes: work done, not time."""
    counter = itertools.count()
    db.set_progress_handler(lambda: next(counter) and 0, 10)
    try:
        action()
    finally:
        db.set_progress_handler(None, 10)
    return next(counter)


def test_committing_one_transaction_does_not_read_the_other_prepared_holds(tmp_path):
    ledger = L.Ledger(tmp_path / "ledger.db")
    db = ledger.writer.db
    ledger.open_account_now("alice", 10 ** 9)
    ledger.open_account_now("bob", 0)

    def prepared_others(count):
        for i in range(count):
            assert L._prepare(db, f"other-{count}-{i}", "alice", 1, "DEBIT")[0] == L.YES

    def commit_cost(txn_id):
        assert L._prepare(db, txn_id, "bob", 5, "CREDIT")[0] == L.YES
        return vm_steps(db, lambda: L._commit(db, txn_id))

    prepared_others(5)
    few = commit_cost("t-few")
    prepared_others(3000)  # a gateway away for a while leaves many holds PREPARED
    many = commit_cost("t-many")
    assert many < 2 * few + 20, (few, many)
    assert db.execute("SELECT balance_minor FROM accounts WHERE name = 'bob'").fetchone()[0] == 10


def balances(db):
    return dict(db.execute("SELECT name, balance_minor FROM accounts"))


def test_a_transfer_within_the_bank_is_one_atomic_step_answered_the_same_again(tmp_path):
    ledger = L.Ledger(tmp_path / "ledger.db")
    db = ledger.writer.db
    ledger.open_account_now("alice", 1000)
    ledger.open_account_now("carol", 0)
    assert L._transfer(db, "t1", "alice", "carol", 300) == (L.COMMITTED, "", "")
    assert balances(db) == {"alice": 700, "carol": 300}
    assert L._transfer(db, "t1", "alice", "carol", 300) == (L.COMMITTED, "", "")  # a retry: nothing moves again
    assert balances(db) == {"alice": 700, "carol": 300}
    outcome, reason, _ = L._transfer(db, "t1", "alice", "carol", 301)  # the same id, other terms
    assert (outcome, reason) == (L.ABORTED, L.CONFLICT) and balances(db) == {"alice": 700, "carol": 300}


def test_a_refused_transfer_keeps_its_first_answer_even_when_funds_arrive_later(tmp_path):
    ledger = L.Ledger(tmp_path / "ledger.db")
    db = ledger.writer.db
    ledger.open_account_now("alice", 100)
    ledger.open_account_now("carol", 0)
    assert L._prepare(db, "hold", "alice", 60, "DEBIT")[0] == L.YES  # held money is not available
    first = L._transfer(db, "t2", "alice", "carol", 50)
    assert first[:2] == (L.ABORTED, L.INSUFFICIENT_FUNDS) and "0.40 available" in first[2]
    L._abort(db, "hold")
    assert L._transfer(db, "t2", "alice", "carol", 50) == first
    assert L._transfer(db, "t3", "alice", "nobody", 1)[:2] == (L.ABORTED, L.ACCOUNT_UNKNOWN)
    assert balances(db) == {"alice": 100, "carol": 0}


def test_two_phase_and_one_phase_payments_never_share_an_id(tmp_path):
    ledger = L.Ledger(tmp_path / "ledger.db")
    db = ledger.writer.db
    ledger.open_account_now("alice", 100)
    ledger.open_account_now("carol", 0)
    assert L._prepare(db, "two-phase", "alice", 10, "DEBIT")[0] == L.YES
    assert L._transfer(db, "two-phase", "alice", "carol", 10)[:2] == (L.ABORTED, L.CONFLICT)
    assert L._transfer(db, "one-phase", "alice", "carol", 10)[0] == L.COMMITTED
    assert L._prepare(db, "one-phase", "alice", 10, "DEBIT")[:2] == (L.NO, L.CONFLICT)
    assert balances(db) == {"alice": 90, "carol": 10}
