"""Group commit for SQLite: many concurrent writers, one transaction and one fsync per batch.

Each operation runs inside its own SAVEPOINT, so one that fails (raises) is rolled back alone;
its caller gets the exception, the others their results, and only once the batch has committed.
A batch of several callers' writes runs in a worker thread, so the event loop keeps taking
requests (which become the next batch) while the disk syncs; a batch of one caller's writes (a lone
request) runs at once on the loop: nothing waits for a window, and no thread hop is paid.

Only what a promise rests on waits for the disk: an operation is `durable` (the default) or not.
A batch with a durable operation commits with synchronous=FULL (the WAL is fsynced before anyone
is answered); a batch of relaxed ones with synchronous=NORMAL (safe against a process crash; the
next fsync, at the latest `flush_every` seconds later, makes it safe against an OS crash too).
"""
import asyncio
import os
import sqlite3
import time

from strife.core import storage


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

    def __init__(self, db, flush_every=1.0):
        self.db = db
        self.path = db.execute("PRAGMA database_list").fetchone()[2]  # for reports of failed writes
        self.flush_every = flush_every
        self.commits = 0          # transactions committed by batches (for tests and measurements) ...
        self.durable_commits = 0  # ... of which fsynced before their answers
        self._queue = []          # (ops, durable, future): one caller's writes, never split across batches
        self._wakeup = asyncio.Event()  # bound to a loop only when first awaited
        self._task = None
        self._synchronous = None   # the connection's current setting
        self._unsynced = False     # relaxed commits not yet fsynced ...
        self._unsynced_since = 0.0  # ... since this monotonic time

    def apply_now(self, op):
        """Run one operation in its own durable transaction, synchronously (start-up, before `start`)."""
        return self._apply([op], durable=True)[0].result()

    def start(self):
        self._task = asyncio.create_task(self._writer(), name="group-commit")

    async def run(self, op, durable=True):
        """Run `op(db)` in the next batch; return its result once that batch has committed
        (and, for a durable operation, is on disk)."""
        return (await self._submit([op], durable))[0].result()

    async def run_all(self, ops, durable=True):
        """Run every `op(db)` of one caller in the same batch, each in its own savepoint; once the
        batch has committed (and, if `durable`, is on disk), a list with each op's result, or the
        exception it raised (only that op was rolled back)."""
        return [outcome.error if outcome.error is not None else outcome.value
                for outcome in await self._submit(list(ops), durable)]

    async def _submit(self, ops, durable):
        future = asyncio.get_running_loop().create_future()
        self._queue.append((ops, durable, future))
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
        if self._unsynced:  # a clean stop leaves everything on disk
            self._flush()

    async def _writer(self):
        while True:
            if self._unsynced:  # relaxed commits wait at most flush_every for their fsync, busy or not
                left = self._unsynced_since + self.flush_every - time.monotonic()
                if left <= 0:
                    if not await asyncio.to_thread(self._flush_or_report):
                        await asyncio.sleep(self.flush_every)  # the commits stand; the fsync is tried again
                    continue
                try:
                    async with asyncio.timeout(left):  # not wait_for, which makes a task per wait
                        await self._wakeup.wait()
                except TimeoutError:
                    continue
            else:
                await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._take_batch()
                ops = [op for group, _, _ in batch for op in group]
                durable = any(d for _, d, _ in batch)
                # One caller's writes are cheaper inline than a thread hop (and that caller has nothing
                # else to wait for); several callers' go to a thread, so the loop keeps gathering the
                # next batch while the disk syncs.
                if len(batch) == 1:
                    outcomes = self._apply(ops, durable)
                else:
                    outcomes = await asyncio.to_thread(self._apply, ops, durable)
                start = 0
                for group, _, future in batch:
                    if not future.done():
                        future.set_result(outcomes[start:start + len(group)])
                    start += len(group)

    def _take_batch(self):
        """Whole callers' groups from the head of the queue, up to MAX_BATCH operations (at least one group)."""
        count, size = 0, 0
        for group, _, _ in self._queue:
            if count and size + len(group) > self.MAX_BATCH:
                break
            count, size = count + 1, size + len(group)
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    def _set_synchronous(self, mode):
        if self._synchronous != mode:
            self.db.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def _flush_or_report(self):
        """_flush; False when the disk refused it (reported for the node's health)."""
        try:
            self._flush()
            return True
        except OSError as exc:
            storage.report(self.path, exc)
            return False

    def _flush(self):
        """fsync what relaxed commits left in the WAL (a durable commit does it on the way)."""
        path = self.path + "-wal"
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # flushes the file, whichever descriptor wrote it
        finally:
            os.close(fd)
        self._unsynced = False

    def _apply(self, ops, durable=True):
        db = self.db
        outcomes = []
        try:
            self._set_synchronous("FULL" if durable else "NORMAL")
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
                    if isinstance(exc, sqlite3.Error):
                        storage.report(self.path, exc)
            db.execute("COMMIT")
            self.commits += 1
            if durable:
                self.durable_commits += 1
                self._unsynced = False  # the fsync covered every earlier frame too
            elif not self._unsynced:
                self._unsynced, self._unsynced_since = True, time.monotonic()
        except sqlite3.Error as exc:  # the batch itself failed (disk full, I/O error): nobody succeeded
            if db.in_transaction:
                db.execute("ROLLBACK")
            storage.report(self.path, exc)  # a disk problem makes the node NOT_SERVING
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
