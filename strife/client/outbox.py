"""The outbox in SQLite (state/<client>/outbox.db): one row per payment the user asked for.

QUEUED (not yet definite; SENDING while an attempt is out) -> COMMITTED | ABORTED. Rows are sent
strictly in `seq` order. A payment the gateway refused outright (Outcome.REJECTED) is written as
ABORTED with the reason REJECTED, as it always was on disk.
A write that fails for the disk (full, failing) raises sqlite3.Error as SQLite does, and is
reported first (strife/core/storage.py), so a client node says NOT_SERVING and why.
"""
from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path

from strife.client.bell import Bell
from strife.core import storage
from strife.core.errors import BadInput
from strife.core.outcomes import AbortReason, Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id TEXT NOT NULL UNIQUE,
    payee TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    status TEXT NOT NULL CHECK (status IN ('QUEUED', 'SENDING', 'COMMITTED', 'ABORTED')),
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, seq);
"""
LOOK_EVERY = 0.02  # seconds between two looks for another process's write where no bell can listen
BACKSTOP = 1.0     # seconds: a waiter with a bell still looks this often (a ring lost, a writer killed)
PENDING = ("QUEUED", "SENDING")
REJECTED = Outcome.REJECTED.value  # the reason column of a payment the gateway refused outright


class DuplicateId(BadInput):
    """The id is already in this outbox for a different payment."""


@dataclasses.dataclass
class Entry:
    seq: int
    txn_id: str
    payee: str
    amount_minor: int
    status: str
    reason: str
    detail: str
    attempts: int
    last_error: str
    created_at: float
    updated_at: float
    next_attempt_at: float

    @property
    def pending(self) -> bool:
        return self.status in PENDING

    @property
    def outcome(self) -> Outcome | None:
        """The definite outcome, or None while it has none."""
        if self.pending:
            return None
        return Outcome.REJECTED if self.reason == REJECTED else Outcome(self.status)


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bell = Bell(path.with_name(path.stem + ".bells"))  # rung after every write (bell.py)
        db = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            storage.report(path, exc)
            if db is not None:
                db.close()
            raise
        self.db = db

    def close(self) -> None:
        self.bell.close()
        self.db.close()

    def listen(self) -> None:
        """Hear other processes' writes from now on (as `changed` does from its first call)."""
        self.bell.listen()

    def version(self) -> int:
        """A number that changes whenever another connection commits a write: read it before reading
        rows, and give it to `changed` as `since`, so that a write landing in between is not missed."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    async def changed(self, within: float, since: int | None = None) -> bool:
        """Wait until another connection has written to the outbox (a CLI queued a payment, the
        client node settled one) since `since` (a `version()`; default: now), at most `within`
        seconds; whether it may have (a ring heard)."""
        listening = self.bell.listen()
        before, deadline = self.version() if since is None else since, time.monotonic() + within
        while self.version() == before:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if listening:
                if await self.bell.wait(min(BACKSTOP, left)):
                    return True  # maybe a write from before `before` was read: one look too many is harmless
            else:
                await asyncio.sleep(min(LOOK_EVERY, left))
        return True

    def _entries(self, where, args=()):
        return [Entry(*row) for row in self.db.execute(f"SELECT * FROM outbox {where}", args)]

    def add(self, txn_id: str, payee: str, amount_minor: int) -> Entry:
        """Queue a payment durably. Re-adding the same id with the same terms returns the existing entry."""
        existing = self.get(txn_id)
        if existing is not None:
            if (existing.payee, existing.amount_minor) != (payee, amount_minor):
                raise DuplicateId(f"transaction id {txn_id} is already in the outbox for another payment")
            return existing
        now = time.time()
        self._write("INSERT INTO outbox (txn_id, payee, amount_minor, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, 'QUEUED', ?, ?)", (txn_id, payee, amount_minor, now, now))
        added = self.get(txn_id)
        assert added is not None
        return added

    def _write(self, sql, args):
        try:
            cursor = self.db.execute(sql, args)
        except sqlite3.Error as exc:
            storage.report(self.path, exc)
            raise
        self.bell.ring()  # committed (autocommit): whoever waits in another process looks now
        return cursor

    def get(self, txn_id: str) -> Entry | None:
        rows = self._entries("WHERE txn_id = ?", (txn_id,))
        return rows[0] if rows else None

    def head(self) -> Entry | None:
        """The oldest payment without a definite outcome: the only one that may be sent now."""
        rows = self._entries("WHERE status IN ('QUEUED', 'SENDING') ORDER BY seq LIMIT 1")
        return rows[0] if rows else None

    def pending(self) -> list[Entry]:
        return self._entries("WHERE status IN ('QUEUED', 'SENDING') ORDER BY seq")

    def recent(self, limit: int) -> list[Entry]:
        return self._entries("ORDER BY seq DESC LIMIT ?", (limit,))

    def sending(self, txn_id: str) -> None:
        self._write("UPDATE outbox SET status = 'SENDING', attempts = attempts + 1, updated_at = ? "
                    "WHERE txn_id = ?", (time.time(), txn_id))

    def settle(self, txn_id: str, outcome: Outcome, reason: AbortReason = AbortReason.NONE, detail: str = "") -> None:
        status, reason_text = (Outcome.ABORTED, REJECTED) if outcome is Outcome.REJECTED else (outcome, reason)
        self._write("UPDATE outbox SET status = ?, reason = ?, detail = ?, last_error = '', updated_at = ? "
                    "WHERE txn_id = ?", (str(status), str(reason_text), detail, time.time(), txn_id))

    def retry_later(self, txn_id: str, error: str, at: float) -> None:
        self._write("UPDATE outbox SET status = 'QUEUED', last_error = ?, next_attempt_at = ?, updated_at = ? "
                    "WHERE txn_id = ?", (error, at, time.time(), txn_id))
