"""A full disk (issue 11): commands say so plainly, with their exit code; nodes report NOT_SERVING
with the reason and serve again by themselves once there is space; nothing is lost.

On a real small file system: a tmpfs mounted for the test, which needs root (CI runs as root).
100 MB, because etcd preallocates a 64 MB write-ahead log when it starts. The commands run in this
process (`Deployment.cli`).
"""
import asyncio
import errno
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tempfile
import textwrap

import pytest
from grpc_health.v1 import health_pb2

from strife.client.outbox import Outbox
from strife.core import storage
from strife.core.headers import HEALTH_REASON
from strife.nodes.health import NodeHealth
from tests.helpers import SMALL_TOPOLOGY, Deployment, wait_for

SIZE = "100m"


@pytest.fixture
def small_filesystem():
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    # a short path: the control socket's must fit in 104 bytes (pytest's tmp_path, under xdist, does not)
    mount_point = pathlib.Path(tempfile.mkdtemp(prefix="strife-fs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)  # something still open
        shutil.rmtree(mount_point, ignore_errors=True)


def fill(path):
    """Write zeros to `path` until the file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            block = bytes(size)
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert os.statvfs(path).f_bavail == 0


def outbox_rows(home, client):
    db = sqlite3.connect(f"file:{home / 'state' / client / 'outbox.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def app_nodes(d):
    return [n for n in d.status()["nodes"] if n["kind"] != "etcd"]


def test_a_full_disk_is_said_plainly_reported_in_health_and_recovered_from(small_filesystem):
    home = small_filesystem / "deployment"
    home.mkdir()
    (home / "topology.yaml").write_text(textwrap.dedent(SMALL_TOPOLOGY))
    d = Deployment(home)
    try:
        d.up()
        assert d.cli("client", "alice", "pay", "bob", "1").returncode == 0
        rows = outbox_rows(home, "alice")
        filler = small_filesystem / "filler"
        fill(filler)

        paid = d.cli("client", "alice", "pay", "bob", "1")
        assert paid.returncode == 1, paid.stdout + paid.stderr
        assert "the disk is full" in paid.stderr and "NOT queued" in paid.stderr, paid.stderr
        assert "Traceback" not in paid.stderr and len(paid.stderr.splitlines()) == 1, paid.stderr
        assert outbox_rows(home, "alice") == rows

        wait_for(lambda: all(n["health"] == "NOT_SERVING" and "disk full" in (n["health_reason"] or "")
                             for n in app_nodes(d)), timeout=20, what="every node NOT_SERVING: disk full")
        table = d.cli("status")
        assert "NOT_SERVING" in table.stdout and "(disk full: cannot write state/bank1" in table.stdout, table.stdout
        balance = d.cli("client", "alice", "balance")  # reading still works
        assert balance.returncode == 0 and "balance 99.00" in balance.stdout, balance.stderr

        filler.unlink()
        wait_for(lambda: all(n["health"] == "SERVING" for n in app_nodes(d)), timeout=20,
                 what="every node SERVING again by itself")
        paid = d.cli("client", "alice", "pay", "bob", "1")
        assert paid.returncode == 0 and paid.stdout.startswith("committed:"), paid.stdout + paid.stderr
        verified = d.cli("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        gateway_log = (home / "logs" / "gateway.log").read_text()
        assert "the node serves again" in gateway_log
    finally:
        d.teardown()


# ---- the pieces, without root ----

def test_a_disk_problem_is_told_from_other_errors():
    assert storage.problem(OSError(errno.ENOSPC, "No space left on device")) == "disk full"
    assert storage.problem(sqlite3.OperationalError("database or disk is full")) == "disk full"
    assert storage.problem(OSError(errno.EROFS, "Read-only file system")) == "read-only file system"
    assert storage.problem(sqlite3.IntegrityError("UNIQUE constraint failed: outbox.txn_id")) is None
    assert storage.problem(sqlite3.OperationalError("database is locked")) is None
    assert storage.problem(OSError(errno.ENOENT, "No such file or directory")) is None
    assert storage.plainly("disk full") == "the disk is full"


class Context:
    def __init__(self):
        self.trailing = ()

    def set_trailing_metadata(self, metadata):
        self.trailing = metadata


def test_health_says_not_serving_with_the_reason_until_the_problem_is_gone():
    async def check(health):
        context = Context()
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), context)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status), dict(context.trailing)

    async def scenario():
        health = NodeHealth()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await check(health) == ("SERVING", {})
        await health.set_problem("disk full: cannot write state/bank1/ledger.db")
        assert await check(health) == ("NOT_SERVING", {HEALTH_REASON: "disk full: cannot write state/bank1/ledger.db"})
        await health.set("", health_pb2.HealthCheckResponse.SERVING)  # the node is ready: the disk still says no
        assert (await check(health))[0] == "NOT_SERVING"
        await health.set_problem(None)
        assert await check(health) == ("SERVING", {})
    asyncio.run(scenario())


def test_a_failed_outbox_write_is_reported_for_the_disk_and_raised(tmp_path, monkeypatch):
    reported = []
    monkeypatch.setattr(storage, "_listeners", [lambda path, why: reported.append((path, why))])
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add("t1", "bob", 100)
    pages = outbox.db.execute("PRAGMA page_count").fetchone()[0]
    outbox.db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(sqlite3.OperationalError, match="full"):
        outbox.add("t2", "b" * 100_000, 100)  # a row that needs pages the database may not have
    outbox.close()
    assert reported == [(tmp_path / "outbox.db", "disk full")]
