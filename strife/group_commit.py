"""Group commit for SQLite: many concurrent writers, one transaction and one fsync per batch.

Each operation runs inside its own SAVEPOINT, so one that fails (raises) is rolled back alone;
its caller gets the exception, the others their results, and only once the batch's COMMIT is on
disk. The batch runs in a worker thread, so the event loop keeps taking requests (which become
the next batch) while the disk syncs. Durability is unchanged: WAL with synchronous=FULL.
"""
import asyncio
import sqlite3


def connect(path, readonly=False):
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
    return db


class GroupCommit:
    MAX_BATCH = 256

    def __init__(self, db):
        self.db = db
        self._queue = []
        self._wakeup = asyncio.Event()  # bound to a loop only when first awaited
        self._task = None

    def apply_now(self, op):
        """Run one operation in its own transaction, synchronously (start-up, before `start`)."""
        return self._apply([op])[0].result()

    def start(self):
        self._task = asyncio.create_task(self._writer(), name="group-commit")

    async def run(self, op):
        """Run `op(db)` in the next batch; return its result once that batch is durable."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._wakeup.set()
        return await future

    async def stop(self):
        if self._task:
            while self._queue:  # let queued writes land before closing
                await asyncio.sleep(0.01)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _writer(self):
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:self.MAX_BATCH], self._queue[self.MAX_BATCH:]
                ops = [op for op, _ in batch]
                # A lone write is cheaper inline than a thread hop; a batch goes to a thread so
                # the loop keeps gathering the next one while the disk syncs.
                outcomes = self._apply(ops) if len(ops) == 1 else await asyncio.to_thread(self._apply, ops)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome.result()) if outcome.ok else future.set_exception(outcome.error)

    def _apply(self, ops):
        db = self.db
        outcomes = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in ops:
                db.execute("SAVEPOINT op")
                try:
                    outcomes.append(_Outcome(value=op(db)))
                    db.execute("RELEASE op")
                except Exception as exc:  # this operation only
                    db.execute("ROLLBACK TO op")
                    db.execute("RELEASE op")
                    outcomes.append(_Outcome(error=exc))
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # the batch itself failed (disk full, I/O error): nobody succeeded
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [_Outcome(error=exc) for _ in ops]
        return outcomes


class _Outcome:
    __slots__ = ("value", "error")

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    @property
    def ok(self):
        return self.error is None

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value
