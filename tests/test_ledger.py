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
