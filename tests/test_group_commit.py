"""Group commit on a real SQLite file: one transaction per batch, each operation all-or-nothing."""
import asyncio
import sqlite3

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
