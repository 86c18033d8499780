"""The gateway's store on a real SQLite file: every write is committed when it returns (no fsync
waited for), and the WAL is fsynced and checkpointed within flush_every by a background task."""
import asyncio
import os
import sqlite3

from strife.nodes.gateway.store import Payment, Store, fingerprint


def payment(txn_id):
    return Payment(txn_id, fingerprint("a", "bank1", "b", "bank2", 5), "a", "bank1", "b", "bank2", 5)


def test_a_write_is_committed_when_it_returns_and_on_disk_within_flush_every(tmp_path, monkeypatch):
    path = tmp_path / "gateway.db"
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def main():
        store = Store(path, flush_every=0.05)
        try:
            p = payment("t1")
            await store.begin(p)
            other = sqlite3.connect(path)  # another process's view: the row is committed already
            seen = other.execute("SELECT status FROM payments WHERE txn_id = 't1'").fetchall()
            unsynced = list(synced)
            await store.finish(p, "COMMITTED", "", "", phase2_done=False)
            for _ in range(300):
                if any(name.endswith("-wal") for name in synced):
                    break
                await asyncio.sleep(0.01)
            # the checkpoint copied everything into the database: nothing is left in the WAL to copy
            for _ in range(100):  # busy while the store's own checkpoint runs in its thread
                busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if not busy:
                    break
                await asyncio.sleep(0.01)
            other.close()
            return seen, unsynced, (busy, frames == copied), store.db.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            await store.close()

    seen, unsynced, checkpoint, synchronous = asyncio.run(main())
    assert seen == [("PENDING",)]
    assert unsynced == [] and synchronous == 1  # NORMAL: no write waited for an fsync
    assert any(name == f"{path}-wal" for name in synced)
    assert checkpoint == (0, True)
    assert sqlite3.connect(path).execute("SELECT status FROM payments").fetchall() == [("COMMITTED",)]


def test_finish_records_phase_two_done_and_forgotten_marks_several(tmp_path):
    async def main():
        store = Store(tmp_path / "gateway.db")
        try:
            for txn_id in ("a", "b", "c"):
                p = payment(txn_id)
                await store.begin(p)
                await store.finish(p, "COMMITTED", "", "", phase2_done=txn_id != "c")
            missing = await store.finish(payment("nowhere"), "ABORTED", "", "", phase2_done=True)
            unfinished = [p.txn_id for p in store.unfinished()]
            await store.forgotten(["a", "b"])
            forgotten = [row[0] for row in store.reader.execute(
                "SELECT txn_id FROM payments WHERE forgotten = 1 ORDER BY txn_id")]
            return missing.status, unfinished, forgotten
        finally:
            await store.close()

    assert asyncio.run(main()) == ("PENDING", ["c"], ["a", "b"])
