"""Test helpers: deployments in temporary directories run through the real `strife` command (a
process of its own, `run`, or its main in this process, `cli`), waiting for conditions, and reading
what is on disk and in etcd (the fixtures are in conftest.py)."""
import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import tempfile
import time
import traceback

import psutil

from strife.core import decisions
from strife.deployment import discovery
from strife.deployment.identities import OPERATOR
from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from strife.core.errors import StrifeError
from strife.launcher.control import ControlClient, NotRunning

STRIFE = [sys.executable, "-m", "strife"]

SMALL_TOPOLOGY = """
settings:
  prepare_timeout: 2s
  hold_timeout: 10s
  stop_grace: 3s
  backoff: 200ms
  warm_spares: false   # a throwaway deployment: no processes made ahead for restarts (the CPU of 3 starts)
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


def client_node_is_sender(home, user):
    """Whether `user`'s client node holds the sender lock, so that it, not a command, delivers what
    `strife client USER pay` queues (a command that finds the lock free delivers in its own process,
    which writes no timeline records)."""
    from strife.client.delivery import SenderLock
    lock = SenderLock(Layout(home).sender_lock(user))
    try:
        return not lock.try_acquire()
    finally:
        lock.release()  # unlocks only if taken here; the node then takes it within its POLL


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


@dataclasses.dataclass
class Answer:
    """What a `strife` command answered in this process, read as subprocess.run's result is."""
    args: list
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _descriptor_2_captured():
    """What is written to file descriptor 2 behind Python's back (gRPC's C core), as a real
    process's stderr would have it: yields a callable that returns it once the block is done."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as spool:
        saved = os.dup(2)
        os.dup2(spool.fileno(), 2)
        written = []
        try:
            yield lambda: written[0] if written else ""
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            spool.seek(0)
            written.append(spool.read().decode(errors="replace"))


class Deployment:
    def __init__(self, home):
        self.home = home

    def run(self, *args, timeout=180, input=None):
        """The real `strife` command, a process of its own."""
        return subprocess.run([*STRIFE, *args], cwd=self.home, capture_output=True, text=True,
                              timeout=timeout, input=input)

    def cli(self, *args, input=None):
        """`strife ARGS` run in this process (strife.cli.main, in the deployment's directory), answered
        as `run` answers: a process start costs about as much CPU as the command itself. Not for
        what forks, daemonizes, reads a terminal or handles signals (`up`): those are `run`'s.

        As in a process of its own: stdout and stderr (descriptor 2 too) are the command's alone,
        stdlib logging is unconfigured (a warning reaches stderr, as Python's last resort prints
        it), an exit by SystemExit is its code, an unexpected exception a traceback and exit 1;
        and the umask it sets (0o077) ends with it."""
        from strife.cli import main
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        umask = os.umask(0o077)
        root.handlers = []
        root.setLevel(logging.WARNING)  # setLevel: also forgets the loggers' cached levels
        stdin, sys.stdin = sys.stdin, io.StringIO(input or "")
        try:
            with contextlib.chdir(self.home), _descriptor_2_captured() as c_level, \
                    contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
                    code = exc.code
                except Exception:  # noqa: BLE001 (as the interpreter would: a traceback, exit 1)
                    traceback.print_exc()
                    code = 1
            if code is None or isinstance(code, str):  # SystemExit(None) is 0; a message, 1
                if isinstance(code, str):
                    err.write(code + "\n")
                code = 0 if code is None else 1
        finally:
            sys.stdin = stdin
            root.handlers = handlers
            root.setLevel(level)
            os.umask(umask)
        return Answer(["strife", *args], int(code), out.getvalue(), err.getvalue() + c_level())

    def up(self):
        result = self.run("up", "-d")
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def status(self):
        """What `strife status --json` prints, asked in this process (the same socket and answer):
        tests poll it often, and a command per look would cost a process start each time."""
        try:
            return ControlClient(Layout(self.home)).status().shown()
        except NotRunning:
            return {"running": False, "nodes": []}

    def node(self, name):
        return next(n for n in self.status()["nodes"] if n["name"] == name)

    def teardown(self):
        try:  # what `strife down` does (tested by itself), without a process start for it
            ControlClient(Layout(self.home)).down(timeout=120)
        except (StrifeError, OSError):  # not running, or not answering: the kill below
            pass
        for proc in processes_of(self.home):  # whatever a failed test left behind
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass




@contextlib.contextmanager
def started(tmp_path_factory, name, topology):
    """A deployment of `topology` in a fresh directory, up for the block and torn down after it
    (also when `up` fails: whatever it started goes too). For module and session fixtures."""
    home = tmp_path_factory.mktemp(name)
    (home / "topology.yaml").write_text(textwrap.dedent(topology))
    d = Deployment(home)
    try:
        d.up()
        yield d
    finally:
        d.teardown()


PAYMENT_TOPOLOGY = """
settings:
  prepare_timeout: 1500ms
  hold_timeout: 6s
  idempotency_retention: 30s   # a long session's etcd stays small (test_etcd_growth waits for 3s)
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
  dave: {bank: bank1, balance: "20.00", restart: 'no'}
"""


def ledger_rows(home, bank, sql, args=()):
    """Read a bank's real SQLite ledger (read-only) — what is on disk, not what an RPC says."""
    db = sqlite3.connect(f"file:{Layout(home).ledger(bank)}?mode=ro", uri=True)
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


def pending_payments(home, user):
    """The ids still waiting in a user's outbox, read from its file (what `strife client USER outbox`
    lists): for polling, where a command per look would cost a process start each time."""
    from strife.client.outbox import Outbox
    outbox = Outbox(Layout(home).outbox(user))
    try:
        return [entry.txn_id for entry in outbox.pending()]
    finally:
        outbox.close()


def prepared_holds(home):
    return sum(ledger_rows(home, ledger.parent.name, "SELECT COUNT(*) FROM holds WHERE state = 'PREPARED'")[0][0]
               for ledger in (home / "state").glob("*/ledger.db"))


def etcd_as(home, work, identity=OPERATOR):
    """`await work(etcd)` with the deployment's etcd, as `identity` (the operator: everything)."""
    topology = load_deployment(home)

    async def go():
        async with discovery.client(topology, identity) as etcd:
            return await work(etcd)
    return asyncio.run(go())


def etcd_key(home, key):
    """(value, lease id) of `key` in the deployment's etcd, or (None, None)."""
    async def read(etcd):
        answer = await etcd.kv.get(key, timeout=5)
        return (answer.kvs[0].value.decode(), answer.kvs[0].lease) if answer.kvs else (None, None)
    return etcd_as(home, read)


def decision_of(home, txn_id):
    """The outcome etcd records for a transaction (its decision, or a bank's abort), or None."""
    banks = [b.name for b in load_deployment(home).of_kind("bank")]
    return etcd_as(home, lambda etcd: decisions.read(etcd, txn_id, banks=banks))
