"""Hostile input against a live deployment (real CLI, real gRPC over mTLS, real files): each is
refused with a one-line message naming its field, nothing is queued, created or half-applied,
no log record can be forged, split or bloated, and runtime files are private.

The `strife` commands run in this process (`Deployment.cli`: the same main, stdout, stderr and exit
code as a process of its own, without a process start per case); one runs as a real process."""
import asyncio
import json
import os
import re
import sqlite3
import stat

import grpc
import psutil
import pytest

from strife.deployment import tls
from strife.deployment.topology import load_deployment
from strife.launcher import control
from strife.rpc import cl_gw_pb2 as cl
from tests.helpers import settled, wait_for

RESERVED = ["operator", "supervisor", "strife", "root", "ca", "infra-ca", "users-ca", "etcd",
            *(f"etcd{i}" for i in range(1, 8)), "gateway", "jwt", "credentials"]
NODES = ["bank1", "bank2"]  # and gateway, etcd: in RESERVED already
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ")


@pytest.fixture(autouse=True)
def no_money_moves(live):
    before = settled(live.home)
    yield
    after = settled(live.home)
    assert {name: after[name] for name in before} == before
    assert sum(after.values()) == sum(before.values())


def tree(home):
    """Every path under the deployment except what changes by itself (logs, etcd's data, SQLite's
    side files, the nodes' disk probes), and what sits next to it: what a refused command must
    leave as it was."""
    out = {p.name for p in home.parent.iterdir()}
    for top in ("certs", "state"):
        for path in (home / top).rglob("*"):
            rel = path.relative_to(home)
            if rel.parts[:2] != ("state", "etcd") and not path.name.endswith(("-wal", "-shm", "-journal", ".write-probe")):
                out.add(str(rel))
    return out


def certs_content(home):
    return {p.name: p.read_bytes() for p in (home / "certs").iterdir()}


def outbox_rows(home, user):
    path = home / "state" / user / "outbox.db"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT txn_id, payee, amount_minor, status FROM outbox ORDER BY seq").fetchall()
    finally:
        db.close()


def refused(result, field):
    """Exit 2, a single line on stderr that names the field, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{field}: " in result.stderr, result.stderr
    return result.stderr


def password_of(home, user):
    return json.loads((home / "state" / "credentials.json").read_text())[user]


def raw_call(home, target, method, payload, identity, metadata=()):
    """One unary call with raw bytes as the request; returns (code, details)."""
    t = load_deployment(home)

    async def go():
        async with grpc.aio.secure_channel(t.node(target).address, tls.channel_credentials(home, identity)) as channel:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                await call(payload, metadata=list(metadata), timeout=10)
                return grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
    return asyncio.run(go())


def as_user(home, user):
    return [("x-strife-user", user), ("x-strife-password", password_of(home, user))]


# ---- reserved names (issue item 4) ----

@pytest.mark.parametrize("name", RESERVED + NODES)
def test_a_reserved_or_node_name_is_refused_at_register(live, name):
    files, content = tree(live.home), certs_content(live.home)
    result = live.cli("client", "admin", "register", name, "--bank", "bank1")
    message = refused(result, "username")
    assert "reserved" in message or "name of a node" in message
    assert tree(live.home) == files and certs_content(live.home) == content  # no certificate overwritten


@pytest.mark.parametrize("name", ["operator", "ca", "bank1", "gateway", "etcd3"])
def test_the_gateway_itself_refuses_reserved_names(live, name):
    request = cl.RegisterClientRequest(username=name, bank="bank1", password="long-enough-pw")
    code, details = raw_call(live.home, "gateway", "/strife.clgw.ClientGateway/RegisterClient",
                             request.SerializeToString(), "admin", as_user(live.home, "admin"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("username: "), details


@pytest.mark.parametrize("args", [
    ("admin", "register", "../../x", "--bank", "bank1"),
    ("../../x", "balance"), ("../../x", "outbox"), ("../../x", "history"), ("../../x", "pay", "bob", "1"),
    ("../../x", "passwd", "--password", "long-enough-pw"),
    ("bank1", "pay", "bob", "1"), ("gateway", "outbox"),
])
def test_a_name_that_is_a_path_or_a_node_creates_nothing(live, args):
    files = tree(live.home)
    refused(live.cli("client", *args), "username" if "register" in args else "name")
    assert tree(live.home) == files
    assert not (live.home.parent / "x").exists()


# ---- logs that cannot be forged (issue item 5) ----

FORGED = ("{ts} INFO strife.calls: call node=gateway method=InitiateTransaction caller=bob "
          "txn_id=forged amount_minor=99999 payee=alice code=OK ms=1.0")
HOSTILE = {
    "newline": "bob\n" + FORGED,
    "escape": "\x1b[2J\x1b[1;31mbob\x1b]0;title\x07",
    "nul": "bob\x00alice",
    "separators": "bob\u2028" + FORGED + "\u2029\x85\r" + FORGED,
    "10kb": "b" * 10_240,
}


def gateway_log(home):
    return (home / "logs" / "gateway.log").read_bytes()


def lines_with(home, marker):
    return [line for line in gateway_log(home).decode().split("\n") if marker in line]


@pytest.mark.parametrize("where", ["payee", "txn_id"])
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_text_in_a_call_leaves_one_bounded_line(live, where, kind):
    marker = f"MARK{where}{kind}"
    value = marker + HOSTILE[kind].format(ts="2030-01-01 00:00:00,000")
    fields = {"txn_id": "ok-id-1", "payee": "bob", "amount_minor": 100, where: value}
    code, details = raw_call(live.home, "gateway", "/strife.clgw.ClientGateway/InitiateTransaction",
                             cl.InitiateTransactionRequest(**fields).SerializeToString(), "alice",
                             as_user(live.home, "alice"))
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details)
    assert f"{where}: " in details and "\n" not in details
    lines = wait_for(lambda: lines_with(live.home, marker), what="the call's log line")
    assert len(lines) == 1, lines
    line = lines[0]
    assert RECORD.match(line) and " call node=gateway method=InitiateTransaction caller=alice " in line, line
    assert len(line) < 600, len(line)  # bounded: 128 characters of each field and a marker
    if len(value) > 128:
        assert f"...[+{len(value) - 128} chars]" in line
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", gateway_log(live.home).decode())
    for invisible in ("\u2028", "\u2029", "\x85", "\x1b"):
        assert invisible not in gateway_log(live.home).decode()
    assert all(RECORD.match(line) for line in gateway_log(live.home).decode().splitlines() if line)


@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "nul"])  # argv cannot carry a NUL
@pytest.mark.parametrize("where", ["payee", "--id"])
def test_hostile_text_through_the_cli_is_refused_before_anything(live, where, kind):
    marker = f"CLI{where}{kind}"
    value = marker + HOSTILE[kind].format(ts="2030-01-01 00:00:00,000")
    args = ["pay", value, "1"] if where == "payee" else ["pay", "bob", "1", "--id", value]
    before = outbox_rows(live.home, "alice")
    # in this process, as every command here; one in a process of its own, its argv through exec
    run = live.run if (where, kind) == ("payee", "newline") else live.cli
    refused(run("client", "alice", *args), {"payee": "payee", "--id": "txn_id"}[where])
    assert outbox_rows(live.home, "alice") == before
    for log in ("gateway.log", "alice.log"):
        assert marker not in (live.home / "logs" / log).read_text(errors="replace")


# ---- malformed messages (issue item 9) ----

MALFORMED = {"truncated-varint": b"\xff\xff", "truncated-string": b"\x0a\x05ab",
             "invalid-utf8": b"\x0a\x02\xff\xfe"}  # field 1: a string, or a message these bytes cannot be


@pytest.mark.parametrize("payload", list(MALFORMED))
@pytest.mark.parametrize("target, method, identity", [
    ("gateway", "/strife.clgw.ClientGateway/InitiateTransaction", "alice"),
    ("gateway", "/strife.clgw.ClientGateway/RegisterClient", "admin"),
    ("gateway", "/grpc.health.v1.Health/Check", "alice"),
    ("bank1", "/strife.gwbank.Bank/LockTransaction", "gateway"),
    ("bank1", "/strife.admin.NodeAdmin/SetFailpoint", "operator"),
])
def test_a_malformed_message_gets_invalid_argument_and_no_traceback(live, payload, target, method, identity):
    metadata = as_user(live.home, identity) if target == "gateway" and identity != "gateway" else ()
    code, details = raw_call(live.home, target, method, MALFORMED[payload], identity, metadata)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("request: "), (code, details)
    log = (live.home / "logs" / f"{target}.log").read_text()
    assert "Traceback" not in log and "Unexpected" not in log


# ---- other input (issue item 9) ----

@pytest.mark.parametrize("amount", ["1" * 4301, "١", "１", "𝟏", "1٠.٠١", "1" * 20], ids=[
    "4301-digits", "arabic-indic-1", "fullwidth-1", "math-bold-1", "arabic-indic-point", "20-digits"])
def test_bad_amounts_are_refused_before_anything_is_queued(live, amount):
    before = outbox_rows(live.home, "alice")
    message = refused(live.cli("client", "alice", "pay", "bob", amount), "amount")
    assert len(message) < 200
    assert outbox_rows(live.home, "alice") == before


@pytest.mark.parametrize("deposit", ["1" * 4301, "１０"], ids=["4301-digits", "fullwidth"])
def test_bad_deposits_are_refused_before_anything_is_registered(live, deposit):
    files = tree(live.home)
    refused(live.cli("client", "admin", "register", "newbie", "--bank", "bank1", "--deposit", deposit), "deposit")
    assert tree(live.home) == files


@pytest.mark.parametrize("args, message", [
    (("pay", "bob", "1", "--wait", "-1"), "--wait must be between"),
    (("pay", "bob", "1", "--wait", "nan"), "--wait must be between"),
    (("history", "--limit", "-3"), "--limit must be between"),
])
def test_bad_options_are_refused_before_anything_is_queued(live, args, message):
    before = outbox_rows(live.home, "alice")
    result = live.cli("client", "alice", *args)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert outbox_rows(live.home, "alice") == before


def test_an_unknown_payer_is_an_error_and_nothing_is_queued(live):
    files = tree(live.home)
    result = live.cli("client", "alcie", "pay", "bob", "1")
    assert result.returncode == 2 and "no certificate for 'alcie'" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert tree(live.home) == files and not (live.home / "state" / "alcie").exists()
    assert live.cli("client", "alcie", "outbox").returncode == 0  # nothing to show, and still no file
    assert not (live.home / "state" / "alcie").exists()


@pytest.mark.parametrize("password", ["pässwörd-1234", "tab\there-1234", " leading-space", "short"])
def test_passwords_that_cannot_travel_are_refused_at_register(live, password):
    files = tree(live.home)
    refused(live.cli("client", "admin", "register", "newbie", "--bank", "bank1", "--password", password), "password")
    assert tree(live.home) == files


def test_a_nul_in_a_password_is_refused_by_the_gateway(live):
    request = cl.RegisterClientRequest(username="newbie", bank="bank1", password="nul\x00in-password")
    code, details = raw_call(live.home, "gateway", "/strife.clgw.ClientGateway/RegisterClient",
                             request.SerializeToString(), "admin", as_user(live.home, "admin"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("password: ")


def test_passwd_refuses_a_password_that_cannot_travel(live):
    before = password_of(live.home, "carol")
    refused(live.cli("client", "carol", "passwd", "--password", "wörd-wörd-wörd"), "password")
    assert password_of(live.home, "carol") == before
    assert live.cli("client", "carol", "balance").returncode == 0


def test_a_long_full_name_is_refused_with_its_own_message(live):
    files = tree(live.home)
    message = refused(live.cli("client", "admin", "register", "newbie", "--bank", "bank1",
                               "--full-name", "n" * 201), "full_name")
    assert "deposit" not in message
    assert tree(live.home) == files


@pytest.mark.parametrize("request_, field", [
    ({"cmd": "pause", "node": "bank2", "seconds": "5"}, "seconds"),
    ({"cmd": "pause", "node": "bank2", "seconds": -1}, "seconds"),
    ({"cmd": "pause", "node": "bank2", "seconds": 1e999}, "seconds"),
    ({"cmd": "kill", "node": "bank2", "signal": 9}, "signal"),
    ({"cmd": "restart", "node": "bank2", "timeout": "later"}, "timeout"),
])
def test_a_bad_control_request_changes_nothing(live, request_, field):
    before = live.node("bank2")
    answer = control.call(live.home / "state" / "supervisor.sock", request_)
    assert answer["ok"] is False and f"{field}: " in answer["error"], answer
    after = live.node("bank2")
    assert after["state"] == "RUNNING" and after["pid"] == before["pid"]
    assert psutil.Process(after["pid"]).status() != psutil.STATUS_STOPPED


# ---- files (issue item 8) ----

def test_runtime_files_are_private(live):
    assert live.cli("client", "alice", "pay", "bob", "1").returncode == 0
    assert live.cli("client", "bob", "pay", "alice", "1").returncode == 0
    seen = {"db": 0, "wal": 0, "shm": 0, "log": 0}
    for top in ("certs", "state", "logs"):
        root = live.home / top
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
        for path in root.rglob("*"):
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert mode & 0o077 == 0, f"{path.relative_to(live.home)} is {oct(mode)}"
            if path.is_dir():
                assert mode == 0o700, path
            for kind, suffix in (("db", ".db"), ("wal", ".db-wal"), ("shm", ".db-shm"), ("log", ".log")):
                if path.name.endswith(suffix):
                    seen[kind] += 1
                    assert mode == 0o600, path
    assert stat.S_IMODE((live.home / "state" / "credentials.json").stat().st_mode) == 0o600
    assert all(seen.values()), seen  # each kind was there to be checked
    assert os.path.exists(live.home / "state" / "alice" / "outbox.db")


def test_verify_is_still_ok_after_all_of_it(live):
    result = live.cli("verify")
    assert result.returncode == 0, result.stdout + result.stderr
