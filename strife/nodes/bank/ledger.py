"""The bank's ledger in SQLite: accounts, holds and the outcomes this bank has applied.

Every change runs in its own savepoint of a group-commit transaction (WAL), so a crash at any
instant leaves either all of a step or none of it. What a promise rests on is fsynced before the
answer leaves: a YES vote is a durable PREPARED hold, and a same-bank transfer is durable before it
is answered. Phase-2 writes (commit, abort) are not waited for: a process crash loses nothing, and
after an OS crash the durable hold and the decision in etcd let the resolver apply them again.
available = balance - PREPARED debits, so a commit never needs funds it might not have. All
amounts are integer minor units; the schema refuses negative balances.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from strife.core.money import format_minor
from strife.core.outcomes import NoReason, Outcome
from strife.nodes import group_commit

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    balance_minor INTEGER NOT NULL CHECK (balance_minor >= 0),
    full_name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deposits (          -- money entering the network: opening balances, registrations
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts(name),
    amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    txn_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    account TEXT NOT NULL REFERENCES accounts(name),
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    state TEXT NOT NULL CHECK (state IN ('PREPARED', 'COMMITTED', 'ABORTED')),
    created_at REAL NOT NULL,
    decided_at REAL,
    counterparty TEXT NOT NULL DEFAULT '',       -- the other side's account and bank ('' in older ledgers)
    counterparty_bank TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (txn_id, direction)
);
CREATE INDEX IF NOT EXISTS holds_prepared ON holds (state, created_at);
CREATE INDEX IF NOT EXISTS holds_account ON holds (account, state);
CREATE TABLE IF NOT EXISTS outcomes (          -- what this bank applied, also for txns it never held
    txn_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL CHECK (outcome IN ('COMMITTED', 'ABORTED')),
    decided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transfers (         -- payments between two accounts of this bank: one phase
    txn_id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    outcome TEXT NOT NULL CHECK (outcome IN ('COMMITTED', 'ABORTED')),
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_payer ON transfers (payer, created_at);
CREATE INDEX IF NOT EXISTS transfers_payee ON transfers (payee, created_at);
"""

# Applied to ledgers made before the columns existed (CREATE TABLE IF NOT EXISTS leaves them as they are).
MIGRATIONS = {"counterparty": "ALTER TABLE holds ADD COLUMN counterparty TEXT NOT NULL DEFAULT ''",
              "counterparty_bank": "ALTER TABLE holds ADD COLUMN counterparty_bank TEXT NOT NULL DEFAULT ''"}

YES, NO = "YES", "NO"
COMMITTED, ABORTED = Outcome.COMMITTED, Outcome.ABORTED
PREPARED = "PREPARED"  # a hold voted YES, waiting for its decision (then COMMITTED or ABORTED)
INSUFFICIENT_FUNDS, ACCOUNT_UNKNOWN, ALREADY_DECIDED, CONFLICT = (
    NoReason.INSUFFICIENT_FUNDS, NoReason.ACCOUNT_UNKNOWN, NoReason.ALREADY_DECIDED, NoReason.CONFLICT)


class Hold(NamedTuple):
    """One side of a cross-bank transaction at this bank."""
    txn_id: str
    direction: str       # DEBIT | CREDIT
    account: str
    amount_minor: int
    state: str           # PREPARED | COMMITTED | ABORTED
    created_at: float


@dataclasses.dataclass
class Snapshot:
    """Everything an audit reads of one ledger, as of one moment."""
    accounts: list[tuple[str, int]]  # (name, balance_minor)
    deposits_minor: int              # every deposit ever made
    holds: list[Hold]
    transfers: dict[str, str]        # txn_id -> outcome of same-bank payments


def snapshot(path: Path) -> Snapshot:
    """A ledger read in one read transaction, without the bank (a live one keeps writing)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("BEGIN")  # one snapshot for all reads of this bank
        accounts = db.execute("SELECT name, balance_minor FROM accounts").fetchall()
        deposits = db.execute("SELECT COALESCE(SUM(amount_minor), 0) FROM deposits").fetchone()[0]
        holds = [Hold(*row) for row in db.execute(
            "SELECT txn_id, direction, account, amount_minor, state, created_at FROM holds")]
        transfers = dict(db.execute("SELECT txn_id, outcome FROM transfers"))
        db.execute("COMMIT")
        return Snapshot(accounts, deposits, holds, transfers)
    finally:
        db.close()


class UnknownAccount(LookupError):
    pass


class AccountExists(Exception):
    pass


class DecisionConflict(Exception):
    """Asked to commit what this bank aborted, or the reverse: the protocol was broken somewhere."""


class NothingPrepared(LookupError):
    """Commit of a transaction this bank never voted YES for."""


class Ledger:
    """Writes go through group commit (one fsync per batch); reads use their own connection and
    see only what is committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        db = group_commit.connect(path)
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(holds)")}
        for column, statement in MIGRATIONS.items():
            if column not in columns:
                db.execute(statement)
        self.writer = group_commit.GroupCommit(db)
        self.reader = group_commit.connect(path, readonly=True)

    def start(self) -> None:
        self.writer.start()

    async def close(self) -> None:
        await self.writer.stop()
        self.reader.close()
        self.writer.db.close()

    # ---- accounts ----

    def open_account_now(self, account: str, opening_minor: int, full_name: str = "",
                         deposit_id: str | None = None) -> None:
        """At start-up, before the writer runs: topology opening balances."""
        return self.writer.apply_now(lambda db: _open_account(db, account, opening_minor, full_name, deposit_id))

    async def open_account(self, account: str, opening_minor: int, full_name: str = "",
                           deposit_id: str | None = None) -> tuple[int, int, str]:
        """Create an account with an opening deposit. Repeating the same deposit_id is a no-op."""
        await self.writer.run(lambda db: _open_account(db, account, opening_minor, full_name, deposit_id))
        return self.account(account)

    async def update_details(self, account: str, full_name: str) -> tuple[int, int, str]:
        def op(db):
            if db.execute("UPDATE accounts SET full_name = ? WHERE name = ?", (full_name, account)).rowcount == 0:
                raise UnknownAccount(account)
        await self.writer.run(op)
        return self.account(account)

    def account(self, account: str) -> tuple[int, int, str]:
        """(balance, available, full_name) as committed."""
        row = self.reader.execute("SELECT balance_minor, full_name FROM accounts WHERE name = ?", (account,)).fetchone()
        if row is None:
            raise UnknownAccount(account)
        return row[0], row[0] - _held(self.reader, account), row[1]

    # ---- two-phase commit ----

    async def prepare(self, txn_id: str, account: str, amount_minor: int, direction: str,
                      counterparty: str = "", counterparty_bank: str = "") -> tuple[str, NoReason, str]:
        """Vote on one side of a transaction: (YES|NO, reason, detail), once the hold is durable."""
        return await self.writer.run(lambda db: _prepare(db, txn_id, account, amount_minor, direction,
                                                         counterparty, counterparty_bank))

    async def commit(self, txn_id: str) -> Outcome:
        """Apply every PREPARED hold of the transaction. Idempotent; returns Outcome.COMMITTED."""
        return await self.writer.run(lambda db: _commit(db, txn_id), durable=False)

    async def abort(self, txn_id: str) -> Outcome:
        """Release the transaction's holds. Idempotent; an unknown txn is recorded as aborted
        (presumed abort), so a prepare that arrives late votes NO instead of holding forever."""
        return await self.writer.run(lambda db: _abort(db, txn_id), durable=False)

    async def transfer(self, txn_id: str, payer: str, payee: str,
                       amount_minor: int) -> tuple[Outcome, NoReason, str]:
        """Pay between two accounts of this bank in one atomic, durable step: (COMMITTED|ABORTED,
        reason, detail). The same id with the same terms gets the same answer again."""
        return await self.writer.run(lambda db: _transfer(db, txn_id, payer, payee, amount_minor))

    async def exchange(self, commits=(), aborts=(), legs=(), transfers=()) -> tuple[list, list, list, list]:
        """One call's changes in one batch (one transaction, one fsync if any must be durable):
        commits and aborts (txn ids), prepares (legs: txn_id, account, amount_minor, direction,
        counterparty, counterparty_bank) and transfers (txn_id, payer, payee, amount_minor). Four lists,
        in the order asked, of each one's answer as `commit`, `abort`, `prepare` and `transfer` give
        it, or the exception it raised (that change alone was rolled back)."""
        ops = ([functools.partial(_commit, txn_id=t) for t in commits]
               + [functools.partial(_abort, txn_id=t) for t in aborts]
               + [functools.partial(_prepare, txn_id=t, account=a, amount_minor=m, direction=d, counterparty=c,
                                    counterparty_bank=b) for t, a, m, d, c, b in legs]
               + [functools.partial(_transfer, txn_id=t, payer=p, payee=q, amount_minor=m) for t, p, q, m in transfers])
        results = await self.writer.run_all(ops, durable=bool(legs or transfers))  # votes and transfers: on disk first
        ends = itertools.accumulate((len(commits), len(aborts), len(legs), len(transfers)))
        starts = (0, *itertools.accumulate((len(commits), len(aborts), len(legs))))
        return tuple(results[start:end] for start, end in zip(starts, ends))  # type: ignore[return-value]

    def history(self, account: str, limit: int) -> list[tuple]:
        """Payments that touched `account` here, newest first: (txn_id, payer, payee, amount_minor,
        state, reason, detail, created_at, decided_at, same_bank). A cross-bank payment's reason is
        not kept here (it is in the payment's record in etcd, and in the answer its gateway gave)."""
        return self.reader.execute(
            "SELECT txn_id, CASE direction WHEN 'DEBIT' THEN account ELSE counterparty END, "
            "CASE direction WHEN 'DEBIT' THEN counterparty ELSE account END, amount_minor, state, '', '', "
            "created_at, COALESCE(decided_at, 0), 0 FROM holds WHERE account = ? "
            "UNION ALL SELECT txn_id, payer, payee, amount_minor, outcome, reason, detail, created_at, created_at, 1 "
            "FROM transfers WHERE payer = ? OR payee = ? ORDER BY 8 DESC LIMIT ?",
            (account, account, account, limit)).fetchall()

    def prepared_of(self, account: str) -> list[str]:
        """Transactions holding money of `account` in PREPARED state (in flight or in doubt)."""
        rows = self.reader.execute("SELECT DISTINCT txn_id FROM holds WHERE account = ? AND state = 'PREPARED'",
                                   (account,)).fetchall()
        return [r[0] for r in rows]

    def in_doubt(self, older_than: float) -> list[str]:
        """Transactions with a PREPARED hold created before `older_than` (unix seconds)."""
        rows = self.reader.execute("SELECT DISTINCT txn_id FROM holds WHERE state = 'PREPARED' AND created_at < ?",
                                   (older_than,)).fetchall()
        return [r[0] for r in rows]


# Each operation below runs inside one savepoint of a group-commit batch: all of it or none.
# `+state` keeps SQLite on the primary key for a transaction's holds: without statistics it
# would pick the state index and scan every PREPARED hold, many while a gateway is away.

def _held(db, account):
    return db.execute("SELECT COALESCE(SUM(amount_minor), 0) FROM holds "
                      "WHERE account = ? AND direction = 'DEBIT' AND state = 'PREPARED'", (account,)).fetchone()[0]


def _open_account(db, account, opening_minor, full_name, deposit_id):
    deposit_id = deposit_id or f"open:{account}"
    row = db.execute("SELECT account FROM deposits WHERE id = ?", (deposit_id,)).fetchone()
    if row is not None and row[0] == account:
        return
    if db.execute("SELECT 1 FROM accounts WHERE name = ?", (account,)).fetchone():
        raise AccountExists(account)
    now = time.time()
    db.execute("INSERT INTO accounts (name, balance_minor, full_name, created_at) VALUES (?, ?, ?, ?)",
               (account, opening_minor, full_name, now))
    db.execute("INSERT INTO deposits (id, account, amount_minor, created_at) VALUES (?, ?, ?, ?)",
               (deposit_id, account, opening_minor, now))


def _transfer(db, txn_id, payer, payee, amount_minor):
    known = db.execute("SELECT payer, payee, amount_minor, outcome, reason, detail FROM transfers WHERE txn_id = ?",
                       (txn_id,)).fetchone()
    if known is not None:
        if known[:3] != (payer, payee, amount_minor):
            return ABORTED, CONFLICT, f"{txn_id} was used for another payment"
        outcome, reason, detail = known[3:]
        return Outcome(outcome), NoReason(reason), detail
    if db.execute("SELECT 1 FROM holds WHERE txn_id = ? UNION SELECT 1 FROM outcomes WHERE txn_id = ?",
                  (txn_id, txn_id)).fetchone():
        return ABORTED, CONFLICT, f"{txn_id} was used for another payment"
    outcome, reason, detail = COMMITTED, NoReason.NONE, ""
    rows = dict(db.execute("SELECT name, balance_minor FROM accounts WHERE name IN (?, ?)", (payer, payee)).fetchall())
    missing = [a for a in (payer, payee) if a not in rows]
    if missing:
        outcome, reason, detail = ABORTED, ACCOUNT_UNKNOWN, f"no account {missing[0]!r} at this bank"
    elif (available := rows[payer] - _held(db, payer)) < amount_minor:
        outcome, reason, detail = ABORTED, INSUFFICIENT_FUNDS, (
            f"{payer} has {format_minor(available)} available, needs {format_minor(amount_minor)}")
    else:
        db.execute("UPDATE accounts SET balance_minor = balance_minor - ? WHERE name = ?", (amount_minor, payer))
        db.execute("UPDATE accounts SET balance_minor = balance_minor + ? WHERE name = ?", (amount_minor, payee))
    # The answer is recorded with the money: a retry is answered from here, never re-decided.
    db.execute("INSERT INTO transfers (txn_id, payer, payee, amount_minor, outcome, reason, detail, created_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (txn_id, payer, payee, amount_minor, outcome, reason, detail,
                                                   time.time()))
    return outcome, reason, detail


def _prepare(db, txn_id, account, amount_minor, direction, counterparty="", counterparty_bank=""):
    if db.execute("SELECT 1 FROM transfers WHERE txn_id = ?", (txn_id,)).fetchone():
        return NO, CONFLICT, f"{txn_id} was used for a payment within this bank"
    existing = db.execute("SELECT account, amount_minor, state, counterparty, counterparty_bank FROM holds "
                          "WHERE txn_id = ? AND direction = ?", (txn_id, direction)).fetchone()
    if existing is not None:
        other = (counterparty, counterparty_bank)
        if existing[:2] != (account, amount_minor) or (all(existing[3:]) and all(other) and existing[3:] != other):
            return NO, CONFLICT, f"{txn_id} {direction} was prepared for another account, amount or counterparty"
        if existing[2] == ABORTED:
            return NO, ALREADY_DECIDED, f"{txn_id} was aborted"
        return YES, NoReason.NONE, ""
    decided = db.execute("SELECT outcome FROM outcomes WHERE txn_id = ?", (txn_id,)).fetchone()
    if decided is not None:
        return NO, ALREADY_DECIDED, f"{txn_id} was already {Outcome(decided[0]).word}"
    row = db.execute("SELECT balance_minor FROM accounts WHERE name = ?", (account,)).fetchone()
    if row is None:
        return NO, ACCOUNT_UNKNOWN, f"no account {account!r} at this bank"
    state, vote = PREPARED, (YES, NoReason.NONE, "")
    if direction == "DEBIT":
        available = row[0] - _held(db, account)
        if available < amount_minor:
            # kept as an aborted hold: the payer's history at this bank shows the refused payment
            state, vote = ABORTED, (NO, INSUFFICIENT_FUNDS, (f"{account} has {format_minor(available)} available, "
                                                               f"needs {format_minor(amount_minor)}"))
    now = time.time()
    db.execute("INSERT INTO holds (txn_id, direction, account, amount_minor, state, created_at, decided_at, "
               "counterparty, counterparty_bank) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (txn_id, direction, account, amount_minor, state, now, now if state == ABORTED else None,
                counterparty, counterparty_bank))
    return vote


def _commit(db, txn_id):
    decided = db.execute("SELECT outcome FROM outcomes WHERE txn_id = ?", (txn_id,)).fetchone()
    if decided is not None:
        if decided[0] != COMMITTED:
            raise DecisionConflict(f"{txn_id} was aborted here; cannot commit it")
        return COMMITTED
    holds = db.execute("SELECT direction, account, amount_minor FROM holds "
                       "WHERE txn_id = ? AND +state = 'PREPARED'", (txn_id,)).fetchall()
    if not holds:
        raise NothingPrepared(f"{txn_id} has no prepared hold at this bank")
    now = time.time()
    for direction, account, amount in holds:
        delta = -amount if direction == "DEBIT" else amount
        db.execute("UPDATE accounts SET balance_minor = balance_minor + ? WHERE name = ?", (delta, account))
    db.execute("UPDATE holds SET state = 'COMMITTED', decided_at = ? WHERE txn_id = ? AND +state = 'PREPARED'",
               (now, txn_id))
    db.execute("INSERT INTO outcomes (txn_id, outcome, decided_at) VALUES (?, 'COMMITTED', ?)", (txn_id, now))
    return COMMITTED


def _abort(db, txn_id):
    decided = db.execute("SELECT outcome FROM outcomes WHERE txn_id = ?", (txn_id,)).fetchone()
    if decided is not None:
        if decided[0] != ABORTED:
            raise DecisionConflict(f"{txn_id} was committed here; cannot abort it")
        return ABORTED
    now = time.time()
    db.execute("UPDATE holds SET state = 'ABORTED', decided_at = ? WHERE txn_id = ? AND +state = 'PREPARED'",
               (now, txn_id))
    db.execute("INSERT INTO outcomes (txn_id, outcome, decided_at) VALUES (?, 'ABORTED', ?)", (txn_id, now))
    return ABORTED
