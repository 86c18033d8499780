"""The gateway's store (SQLite): one row per payment this gateway took, its journal: the payments
it still has to finish (phase 2) or to forget (their records in etcd, after the retention), and
the answers it gave. (The users table is read once, to move users made before the directory
moved to etcd: user_directory.py.)

Payment rows are not waited for on disk (WAL, synchronous=NORMAL): a
process crash loses nothing, and after an OS crash the answers are in etcd beside their decisions
(strife/core/decisions.py) and same-bank payments in the bank's ledger, where recovery finds them.

So no write here waits for a disk: each is one statement, its own transaction, run at once on the
event loop (a few tens of microseconds, committed when the call returns). A queue and a batch
per write (strife/nodes/group_commit.py, which the banks need for their fsyncs) cost several
times that here, and two more turns of the loop on the payment's path. The WAL is fsynced and
checkpointed within FLUSH_EVERY seconds by a background task, in a thread."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

from strife.core import storage
from strife.core.outcomes import AbortReason, Outcome
from strife.nodes import group_commit

log = logging.getLogger(__name__)
FLUSH_EVERY = 1.0  # seconds a committed row may wait for its fsync (an OS crash loses at most that)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    bank TEXT NOT NULL,
    role TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    txn_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    payer TEXT NOT NULL, payer_bank TEXT NOT NULL,
    payee TEXT NOT NULL, payee_bank TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMMITTED', 'ABORTED')),
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    phase2_done INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    decided_at REAL,
    forgotten INTEGER NOT NULL DEFAULT 0   -- its decision is deleted from etcd: this row answers alone
);
CREATE INDEX IF NOT EXISTS payments_payer ON payments (payer, created_at);
CREATE INDEX IF NOT EXISTS payments_payee ON payments (payee, created_at);
CREATE INDEX IF NOT EXISTS payments_unfinished ON payments (phase2_done) WHERE phase2_done = 0;
"""
# Applied to stores made before the column existed (CREATE TABLE IF NOT EXISTS leaves them as they are).
MIGRATIONS = {"forgotten": "ALTER TABLE payments ADD COLUMN forgotten INTEGER NOT NULL DEFAULT 0"}
PENDING = "PENDING"  # the status of a payment without its final answer: the wire's IN_PROGRESS
REMEMBERED = "CREATE INDEX IF NOT EXISTS payments_remembered ON payments (decided_at) WHERE forgotten = 0 AND phase2_done = 1"


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    bank: str
    role: str
    salt: bytes
    hash: bytes


@dataclasses.dataclass
class Payment:
    txn_id: str
    fingerprint: str
    payer: str
    payer_bank: str
    payee: str
    payee_bank: str
    amount_minor: int
    status: str = PENDING   # PENDING, or the Outcome (COMMITTED, ABORTED) recorded
    reason: str = ""
    detail: str = ""
    phase2_done: int = 0
    created_at: float = 0.0
    decided_at: float | None = None

    @property
    def final(self) -> bool:
        return self.status != PENDING

    @property
    def outcome(self) -> Outcome:
        return Outcome.IN_PROGRESS if self.status == PENDING else Outcome(self.status)

    @property
    def abort_reason(self) -> AbortReason:
        return AbortReason(self.reason)

    def legs(self):
        """(bank, direction, account) for each side."""
        return [(self.payer_bank, "DEBIT", self.payer), (self.payee_bank, "CREDIT", self.payee)]


def fingerprint(payer, payer_bank, payee, payee_bank, amount_minor):
    """What a transaction id is bound to: the same id with other terms is a different request."""
    return hashlib.sha256(f"{payer}\0{payer_bank}\0{payee}\0{payee_bank}\0{amount_minor}".encode()).hexdigest()


def acknowledged_commits(path: Path, decided_before: float) -> dict[str, tuple[bool, bool]]:
    """{txn_id: (same bank?, phase 2 acknowledged by every bank?)} of every commit a gateway's store
    acknowledged before `decided_before`, read without the gateway (for the audit). A finished
    cross-bank payment's decision may be missing from etcd: the gateway deletes it there before it
    marks the row `forgotten`, so an audit that reads etcd and then this store can see it gone with
    the row not yet marked."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {txn: (bool(same), bool(finished)) for txn, same, finished in db.execute(
            "SELECT txn_id, payer_bank = payee_bank, phase2_done FROM payments WHERE status = 'COMMITTED' "
            "AND decided_at < ?", (decided_before,))}
    finally:
        db.close()


class Store:
    """Writes run at once and are committed when they return; reads see what is committed."""

    def __init__(self, path: Path, flush_every: float = FLUSH_EVERY) -> None:
        db = group_commit.connect(path)
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(payments)")}
        for column, statement in MIGRATIONS.items():
            if column not in columns:
                db.execute(statement)
        db.execute(REMEMBERED)
        db.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: the flusher does it
        # Checkpoints fsync; left to SQLite they would run inside some commit, on the event loop.
        db.execute("PRAGMA wal_autocheckpoint=0")
        self.db, self.path, self.flush_every = db, str(path), flush_every
        self.reader = group_commit.connect(path, readonly=True)
        self._checkpointer = group_commit.connect(path)  # used by the flusher's thread only
        self._dirty = False
        self._flusher = asyncio.create_task(self._flush_forever(), name="gateway store flush")

    async def close(self) -> None:
        self._flusher.cancel()
        try:
            await self._flusher
        except asyncio.CancelledError:
            pass
        try:
            self._flush()  # a clean stop leaves everything on disk
        finally:
            self.reader.close()
            self._checkpointer.close()
            self.db.close()

    def _write(self, sql, args=()):
        """One statement in its own transaction, committed on return: a process crash keeps it."""
        try:
            cursor = self.db.execute(sql, args)
        except sqlite3.Error as exc:
            storage.report(self.path, exc)  # a disk problem makes the node NOT_SERVING
            raise
        self._dirty = True
        return cursor

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            if self._dirty:
                self._dirty = False
                try:
                    await asyncio.to_thread(self._flush)
                except (OSError, sqlite3.Error) as exc:
                    self._dirty = True  # the rows stand; the fsync is tried again next time
                    if storage.report(self.path, exc) is None:
                        log.warning("gateway store not flushed: %s", exc)

    def _flush(self) -> None:
        """fsync the WAL (what an OS crash could lose), then copy it into the database, on a
        connection of its own (PASSIVE: writers go on meanwhile)."""
        fd = os.open(self.path + "-wal", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ---- users ----

    def legacy_users(self) -> list[User]:
        """Users kept here before the user directory moved to etcd (user_directory.py): seeded from them."""
        return [User(*row) for row in self.reader.execute("SELECT name, bank, role, salt, hash FROM users")]

    # ---- payments ----

    _COLUMNS = ("txn_id, fingerprint, payer, payer_bank, payee, payee_bank, amount_minor, status, reason, "
                "detail, phase2_done, created_at, decided_at")

    def payment(self, txn_id: str) -> Payment | None:
        row = self.reader.execute(f"SELECT {self._COLUMNS} FROM payments WHERE txn_id = ?", (txn_id,)).fetchone()
        return Payment(*row) if row else None

    async def begin(self, payment: Payment) -> None:
        """Record a new payment as PENDING before anything is sent to a bank (committed: a process
        crash keeps it; on disk within FLUSH_EVERY)."""
        payment.created_at = payment.created_at or time.time()
        row = tuple(getattr(payment, f.name) for f in dataclasses.fields(payment))  # astuple deep-copies
        self._write(f"INSERT INTO payments ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    async def discard(self, txn_id: str) -> None:
        """Remove a PENDING row whose id turned out to belong to another payment."""
        self._write("DELETE FROM payments WHERE txn_id = ? AND status = 'PENDING'", (txn_id,))

    async def finish(self, payment: Payment, status: str, reason: str, detail: str, phase2_done: bool) -> Payment:
        """Record the outcome unless one is recorded already: the first answer is final (a path
        acting on an old copy cannot rewrite it). `payment` is left holding the recorded answer."""
        # one statement: the answer only where none is recorded (every SET sees the row as it was)
        recorded = self._write(
            "UPDATE payments SET status = CASE status WHEN 'PENDING' THEN ? ELSE status END, "
            "reason = CASE status WHEN 'PENDING' THEN ? ELSE reason END, "
            "detail = CASE status WHEN 'PENDING' THEN ? ELSE detail END, "
            "decided_at = CASE status WHEN 'PENDING' THEN ? ELSE decided_at END, "
            "phase2_done = MAX(phase2_done, ?) WHERE txn_id = ? "
            "RETURNING status, reason, detail, phase2_done, decided_at",
            (status, reason, detail, time.time(), int(phase2_done), payment.txn_id)).fetchall()  # all: done, committed
        if recorded:
            (payment.status, payment.reason, payment.detail, payment.phase2_done, payment.decided_at) = recorded[0]
        return payment

    async def phase2_done(self, txn_id: str) -> None:
        self._write("UPDATE payments SET phase2_done = 1 WHERE txn_id = ?", (txn_id,))

    def to_forget(self, decided_before: float, limit: int) -> list[tuple[str, tuple[str, ...]]]:
        """(txn_id, banks whose aborts to delete) of payments finished everywhere before
        `decided_before` whose record may still be in etcd (a same-bank payment has only its terms
        there, claimed when there are several gateways)."""
        rows = self.reader.execute(
            "SELECT txn_id, payer_bank, payee_bank FROM payments WHERE forgotten = 0 AND phase2_done = 1 "
            "AND decided_at < ? LIMIT ?", (decided_before, limit)).fetchall()
        return [(txn_id, (payer_bank, payee_bank) if payer_bank != payee_bank else ())
                for txn_id, payer_bank, payee_bank in rows]

    async def forgotten(self, txn_ids: list[str]) -> None:
        self._write("UPDATE payments SET forgotten = 1 WHERE txn_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(txn_ids),))

    def unfinished(self) -> list[Payment]:
        rows = self.reader.execute(f"SELECT {self._COLUMNS} FROM payments WHERE phase2_done = 0").fetchall()
        return [Payment(*row) for row in rows]

    def history(self, user: str, limit: int) -> list[Payment]:
        rows = self.reader.execute(f"SELECT {self._COLUMNS} FROM payments WHERE payer = ? OR payee = ? "
                                   "ORDER BY created_at DESC LIMIT ?", (user, user, limit)).fetchall()
        return [Payment(*row) for row in rows]
