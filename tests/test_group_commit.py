"""Group commit on a real SQLite file: one transaction per batch, each operation all-or-nothing."""
import asyncio
import sqlite3
import threading

import pytest

from strife.nodes import group_commit


def test_a_failing_operation_is_rolled_back_alone(tmp_path):
    path = tmp_path / "g.db"
    db = group_commit.connect(path)
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))")
    writer = group_commit.GroupCommit(db)

    def put(k, v):
        return lambda db: db.execute("INSERT INTO t VALUES (?, ?)", (k, v)).rowcount

    def half_then_fail(db):
        db.execute("INSERT INTO t VALUES ('half', 1)")
        db.execute("INSERT INTO t VALUES ('bad', -1)")  # CHECK fails: 'half' must not stay either

    async def main():
        writer.start()
        results = await asyncio.gather(writer.run(put("a", 1)), writer.run(half_then_fail), writer.run(put("b", 2)),
                                       return_exceptions=True)
        await writer.stop()
        return results

    a, failed, b = asyncio.run(main())
    assert a == 1 and b == 1 and isinstance(failed, sqlite3.IntegrityError)
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("a", 1), ("b", 2)]
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_apply_now_runs_one_operation_in_its_own_transaction(tmp_path):
    db = group_commit.connect(tmp_path / "g.db")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    writer = group_commit.GroupCommit(db)
    assert writer.apply_now(lambda db: db.execute("INSERT INTO t VALUES ('x')").rowcount) == 1
    with pytest.raises(sqlite3.IntegrityError):
        writer.apply_now(lambda db: db.execute("INSERT INTO t VALUES ('x')"))
    assert not db.in_transaction


def test_only_durable_operations_wait_for_the_disk_and_relaxed_ones_are_flushed_soon(tmp_path):
    db = group_commit.connect(tmp_path / "g.db")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    writer = group_commit.GroupCommit(db, flush_every=0.05)

    def put(k):  # reports the synchronous setting its transaction commits under: 2 FULL, 1 NORMAL
        return lambda db: (db.execute("INSERT INTO t VALUES (?)", (k,)),
                           db.execute("PRAGMA synchronous").fetchone()[0])[1]

    async def main():
        writer.start()
        relaxed = await writer.run(put("phase-2"), durable=False)
        left_unsynced = writer._unsynced
        for _ in range(200):  # the writer flushes by itself within flush_every
            if not writer._unsynced:
                break
            await asyncio.sleep(0.01)
        flushed = not writer._unsynced
        await writer.run(put("phase-2 again"), durable=False)
        mixed = await asyncio.gather(writer.run(put("vote"), durable=True), writer.run(put("late"), durable=False))
        after_durable = writer._unsynced
        await writer.stop()
        return relaxed, left_unsynced, flushed, mixed, after_durable

    relaxed, left_unsynced, flushed, mixed, after_durable = asyncio.run(main())
    assert (relaxed, left_unsynced, flushed) == (1, True, True)
    assert mixed == [2, 2] and after_durable is False  # one durable operation makes its whole batch durable
    assert [r[0] for r in sqlite3.connect(tmp_path / "g.db").execute("SELECT k FROM t ORDER BY k")] == [
        "late", "phase-2", "phase-2 again", "vote"]


def _table(tmp_path):
    db = group_commit.connect(tmp_path / "g.db")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    return db


def _put(k):
    """An operation that says which thread ran it."""
    return lambda db: (db.execute("INSERT INTO t VALUES (?)", (k,)), threading.get_ident())[1]


async def _loop_passes(work):
    """(result of `work`, event-loop passes it took): counted, not timed, so a loaded machine cannot
    make a lone write look held back, nor hide a window that holds it back."""
    passes = 0

    async def count():
        nonlocal passes
        while True:
            passes += 1
            await asyncio.sleep(0)
    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = passes
    try:
        return await work, passes - before
    finally:
        counter.cancel()


def test_a_lone_write_is_applied_at_once_on_the_loop_in_one_durable_commit(tmp_path):
    writer = group_commit.GroupCommit(_table(tmp_path))

    async def main():
        writer.start()
        try:
            return await _loop_passes(writer.run(_put("lone")))
        finally:
            await writer.stop()

    thread, passes = asyncio.run(main())
    assert thread == threading.get_ident()  # inline: no hop to a worker thread
    assert passes <= 3  # the writer's turn, then the answer: no batching window waited for
    assert (writer.commits, writer.durable_commits) == (1, 1)


def test_one_callers_writes_share_one_commit_and_fail_alone(tmp_path):
    writer = group_commit.GroupCommit(_table(tmp_path))

    def fail(db):
        db.execute("INSERT INTO t VALUES ('half')")
        raise ValueError("refused")

    async def main():
        writer.start()
        try:
            return await writer.run_all([_put("a"), fail, _put("b")], durable=False)
        finally:
            await writer.stop()

    a, failed, b = asyncio.run(main())
    assert a == b == threading.get_ident() and isinstance(failed, ValueError)
    assert (writer.commits, writer.durable_commits) == (1, 0)
    assert [r[0] for r in sqlite3.connect(tmp_path / "g.db").execute("SELECT k FROM t ORDER BY k")] == ["a", "b"]


def test_under_load_concurrent_callers_share_one_fsync_per_batch(tmp_path):
    """60 callers, 20 of them arriving while the first batch is on its way to the disk: every write
    is durable, and the writes take two or three commits, not sixty."""
    writer = group_commit.GroupCommit(_table(tmp_path))

    async def main():
        writer.start()
        try:
            first = [asyncio.ensure_future(writer.run(_put(f"first-{i}"))) for i in range(40)]
            await asyncio.sleep(0)  # the writer takes the first 40 as one batch
            late = [asyncio.ensure_future(writer.run_all([_put(f"late-{i}")])) for i in range(20)]
            return await asyncio.gather(*first), await asyncio.gather(*late)
        finally:
            await writer.stop()

    first, late = asyncio.run(main())
    assert len(first) == 40 and len(late) == 20
    assert writer.commits == writer.durable_commits and 2 <= writer.commits <= 3, writer.commits
    assert threading.get_ident() not in first  # several callers: synced in a worker thread, the loop kept going
    assert sqlite3.connect(tmp_path / "g.db").execute("SELECT COUNT(*) FROM t").fetchone()[0] == 60


def test_a_callers_writes_are_never_split_across_batches(tmp_path):
    writer = group_commit.GroupCommit(_table(tmp_path))
    writer.MAX_BATCH = 4

    def commits_so_far(db):
        return writer.commits

    async def main():
        writer.start()
        try:
            return await asyncio.gather(writer.run_all([_put("a"), commits_so_far, _put("b")]),
                                        writer.run_all([commits_so_far, _put("c"), commits_so_far]))
        finally:
            await writer.stop()

    (_, one, _), (two, _, three) = asyncio.run(main())
    assert one == 0 and two == three == 1  # 3 + 3 > MAX_BATCH: two batches, each caller's whole
