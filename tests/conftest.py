"""Shared test helpers: deployments in temporary directories, run through the real `strife` binary."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

STRIFE = [sys.executable, "-m", "strife"]

SMALL_TOPOLOGY = """
settings:
  prepare_timeout: 2s
  hold_timeout: 10s
  stop_grace: 3s
  backoff: 200ms
etcd:
  members: 1
banks:
  bank1: {}
  bank2: {}
gateway: {}
clients:
  admin: {bank: bank1, role: admin}
  alice: {bank: bank1, balance: "100.00"}
  bob: {bank: bank2, balance: "50.00"}
"""


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def processes_of(home):
    """Every live process whose command line mentions this deployment's directory."""
    home = str(home)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(home in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


class Deployment:
    def __init__(self, home):
        self.home = home

    def run(self, *args, timeout=180, input=None):
        return subprocess.run([*STRIFE, *args], cwd=self.home, capture_output=True, text=True,
                              timeout=timeout, input=input)

    def up(self):
        result = self.run("up", "-d")
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def status(self):
        result = self.run("status", "--json")
        return json.loads(result.stdout)

    def node(self, name):
        return next(n for n in self.status()["nodes"] if n["name"] == name)

    def teardown(self):
        self.run("down", timeout=120)
        for proc in processes_of(self.home):  # whatever a failed test left behind
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def deployment(tmp_path_factory):
    """deployment(topology_text) -> a Deployment in a fresh directory, torn down after the test."""
    made = []

    def make(topology=SMALL_TOPOLOGY, name="home"):
        home = tmp_path_factory.mktemp(name)
        (home / "topology.yaml").write_text(textwrap.dedent(topology))
        made.append(Deployment(home))
        return made[-1]

    yield make
    for d in made:
        d.teardown()


PAYMENT_TOPOLOGY = """
settings:
  prepare_timeout: 1500ms
  hold_timeout: 6s
  stop_grace: 3s
  backoff: 200ms
  max_amount: "1000.00"
etcd:
  members: 1
banks:
  bank1: {}
  bank2: {}
gateway: {}
clients:
  admin: {bank: bank1, role: admin}
  alice: {bank: bank1, balance: "100.00"}
  bob: {bank: bank2, balance: "50.00"}
  carol: {bank: bank1, balance: "10.00"}
"""


def ledger_rows(home, bank, sql, args=()):
    """Read a bank's real SQLite ledger (read-only) — what is on disk, not what an RPC says."""
    import sqlite3
    db = sqlite3.connect(f"file:{home / 'state' / bank / 'ledger.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def balances(home):
    """{account: balance_minor} across every bank's ledger."""
    out = {}
    for ledger in sorted((home / "state").glob("*/ledger.db")):
        out.update(dict(ledger_rows(home, ledger.parent.name, "SELECT name, balance_minor FROM accounts")))
    return out


def settled(home, timeout=30.0):
    """Every bank's balances once phase 2 of every answered payment has landed: a payment is answered
    at its decision and phase 2 follows, so a test reading ledgers after an answer waits for it."""
    wait_for(lambda: prepared_holds(home) == 0, timeout=timeout, what="phase 2 of every answered payment")
    return balances(home)


def prepared_holds(home):
    return sum(ledger_rows(home, ledger.parent.name, "SELECT COUNT(*) FROM holds WHERE state = 'PREPARED'")[0][0]
               for ledger in (home / "state").glob("*/ledger.db"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One payment deployment shared by a module's tests; each test measures its own deltas."""
    home = tmp_path_factory.mktemp("live")
    (home / "topology.yaml").write_text(textwrap.dedent(PAYMENT_TOPOLOGY))
    d = Deployment(home)
    d.up()
    yield d
    d.teardown()
