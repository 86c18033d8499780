"""The rules for hostile input, without processes: names, amounts, passwords, log escaping,
control requests, file modes and the control socket's peer check."""
import asyncio
import io
import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest
from loguru import logger

from strife.core import log_format, names, passwords
from strife.core.money import AmountError, parse_amount
from strife.core.untrusted import escape, field, pair, shown
from strife.deployment import topology
from strife.deployment.layout import Layout
from strife.launcher import control, control_server, logs
from strife.nodes.interceptors import _fields
from strife.rpc import cl_gw_pb2 as cl, gw_bank_pb2 as gb
from tests.helpers import SMALL_TOPOLOGY

# ---- names ----

FIXED_RESERVED = ["operator", "supervisor", "strife", "root", "ca", "infra-ca", "users-ca", "etcd",
                  *(f"etcd{i}" for i in range(1, 8)), "gateway", "jwt", "credentials"]


@pytest.mark.parametrize("name", FIXED_RESERVED)
def test_every_reserved_name_is_refused(name):
    assert "reserved" in names.problem(name)


def test_node_names_are_refused_for_users_but_clients_are_users(tmp_path):
    (tmp_path / "topology.yaml").write_text(SMALL_TOPOLOGY)
    t = topology.load(tmp_path / "topology.yaml")
    nodes = names.node_names(t)
    assert nodes == {"etcd", "bank1", "bank2", "gateway"}
    assert "name of a node" in names.problem("bank1", nodes)
    assert names.problem("alice", nodes) is None and names.problem("admin", nodes) is None


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "Alice", "1abc", "", "a" * 33, "a b", "a\nb",
                                  "é", "alice\x00", "ａlice"])
def test_unusable_names(name):
    why = names.problem(name)
    assert "not a usable name" in why and "\n" not in why


@pytest.mark.parametrize("name", FIXED_RESERVED)
def test_reserved_names_refused_in_the_topology(tmp_path, name):
    for section in ("clients", "banks"):
        text = SMALL_TOPOLOGY.replace("alice: {bank: bank1,", f"{name}: {{bank: bank1,"
                                      ) if section == "clients" else SMALL_TOPOLOGY.replace("bank2: {}", f"{name}: {{}}")
        path = tmp_path / "topology.yaml"
        path.write_text(text)
        with pytest.raises(topology.TopologyError) as caught:
            topology.load(path)
        assert any("reserved" in p or "already used" in p for p in caught.value.problems), caught.value.problems


def test_a_path_as_a_topology_name_is_refused(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY.replace("alice: {bank: bank1,", "'../../x': {bank: bank1,"))
    with pytest.raises(topology.TopologyError) as caught:
        topology.load(path)
    assert "clients.../../x: '../../x' is not a usable name" in caught.value.problems[0]


def test_a_huge_number_in_the_topology_is_a_problem_not_a_traceback(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY.replace('balance: "100.00"', "balance: " + "1" * 5000))
    with pytest.raises(topology.TopologyError, match="too long"):
        topology.load(path)


def test_txn_ids():
    assert names.txn_id_problem("3f2c-11.x_y") is None
    for bad in ["", "a" * 65, "a\nb", "-x", "a b", "١"]:
        assert names.txn_id_problem(bad)


# ---- amounts ----

@pytest.mark.parametrize("text", ["١", "１", "𝟏", "1٠.٠١", "1.٠١", "٥٠", "1\u00a0000", "1_000", "+5", "0x10"])
def test_only_ascii_digits_are_amounts(text):
    with pytest.raises(AmountError, match="not an amount|negative"):
        parse_amount(text)


@pytest.mark.parametrize("text", ["1" * 4301, "9" * 16, "0" * 30 + "1", 10 ** 5000, "1" * 100_000 + ".5"],
                         ids=["4301-digits", "16-nines", "leading-zeros", "int-5000-digits", "100k-digits"])
def test_a_long_amount_is_refused_before_any_conversion(text):
    with pytest.raises(AmountError, match="too long") as caught:
        parse_amount(text)
    assert len(str(caught.value)) < 120  # the message does not echo the digits back


def test_the_longest_amount_still_parses():
    assert parse_amount("9" * 15 + ".99") == 10 ** 17 - 1


# ---- passwords ----

@pytest.mark.parametrize("password, why", [
    ("short", "8 to 128"), ("x" * 129, "8 to 128"), ("pässwörd-long", "printable ASCII"),
    ("tab\there-long", "printable ASCII"), ("nul\x00here-long", "printable ASCII"),
    ("newline\nlong", "printable ASCII"), (" leading-space", "start or the end"),
    ("trailing-space ", "start or the end"), ("emoji-😀-long", "printable ASCII"),
])
def test_passwords_that_cannot_travel_in_metadata_are_refused(password, why):
    with pytest.raises(passwords.PasswordError, match=why) as caught:
        passwords.check_strength(password)
    assert str(caught.value).startswith("password: ")


def test_printable_ascii_passwords_are_fine():
    passwords.check_strength("correct horse battery staple!~")
    passwords.check_strength("x" * 128)


# ---- escaping ----

@pytest.mark.parametrize("text, shown_as", [
    ("a\nb", "a\\nb"), ("\r\t", "\\r\\t"), ("\x1b[31m", "\\x1b[31m"), ("\x00", "\\x00"), ("\x7f", "\\x7f"),
    ("\x85", "\\x85"), ("\u2028\u2029", "\\u2028\\u2029"), ("back\\slash", "back\\\\slash"),
    ("\u202e", "\\u202e"), ("\ud800", "\\ud800"), ("é世", "é世"), ("plain text", "plain text"),
])
def test_escape(text, shown_as):
    assert escape(text) == shown_as


def test_escape_keeping_backslashes_still_leaves_one_line():
    assert escape("a\\nb\nc", backslash=False) == "a\\nb\\nc"


def test_field_is_bounded_with_a_marker():
    assert field("x" * 10_000) == "x" * 128 + "...[+9872 chars]"
    assert field("\n" * 200).startswith("\\n" * 128) and field("\n" * 200).endswith("...[+72 chars]")


def test_pair_quotes_what_could_look_like_fields():
    assert pair("payee", "bob") == "payee=bob"
    assert pair("payee", "bob code=OK") == 'payee="bob code=OK"'
    assert pair("payee", 'a"b') == 'payee="a\\"b"'


def test_shown_is_one_quoted_line():
    assert shown("a\nb'c" + "x" * 100) == "'a\\nb\\'c" + "x" * 35 + "'..."


HOSTILE = ["bob\n2024-01-01 00:00:00,000 INFO strife.calls: call node=gateway method=InitiateTransaction code=OK",
           "\x1b[2J\x1b[31mred", "nul\x00byte", "s" * 10_000, "sep\u2028arator\x85\r", "bob code=OK ms=0.1"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_call_log_fields_stay_on_one_bounded_line(hostile):
    fields = _fields(cl.InitiateTransactionRequest(txn_id=hostile, payee=hostile, amount_minor=5))
    assert dict(fields)["amount_minor"] == 5  # a number stays a number (a JSON key's value)
    line = log_format.call_text(dict(fields))
    assert len(line) < 2 * (128 + 40) + 50
    assert all(0x20 <= ord(c) < 0x7f for c in line), line
    batch = log_format.call_text(dict(_fields(gb.DecisionRequest(txn_ids=[hostile] * 1000))))
    assert batch.endswith('...[+744 more]"') and all(0x20 <= ord(c) < 0x7f for c in batch)
    transfers = log_format.call_text(dict(_fields(gb.ExchangeRequest(transfer=[
        gb.Transfer(txn_id=hostile, payer=hostile, payee=hostile, amount_minor=1)] * 300))))
    assert "transfer=" in transfers and transfers.endswith('...[+44 more]"')
    assert all(0x20 <= ord(c) < 0x7f for c in transfers)


def formatted(format_function, log):
    """What `format_function` makes of the records `log(logger)` writes, as written by loguru."""
    out, marker = io.StringIO(), object()
    handler = logger.add(out, format=format_function, filter=lambda record: record["extra"].get("t") is marker)
    try:
        log(logger.bind(t=marker, logger="x"))
    finally:
        logger.remove(handler)
    return out.getvalue()


@pytest.mark.parametrize("line", [log_format.text_line, log_format.json_line, log_format.console_line])
def test_the_node_formats_keep_a_record_on_one_line(line):
    def log(bound):
        bound.warning("payment a\nb\u2028c\x85{x}<red> stopped")
        try:
            raise ValueError("boom\nINFO forged line")
        except ValueError:
            bound.exception("failed")
    out = formatted(line, log)
    records = out.split("\n")
    assert len(records) == 3 and records[-1] == "", out
    for invisible in ("\u2028", "\x85", "\r"):
        assert invisible not in out
    if line is log_format.json_line:
        first, second = (json.loads(record) for record in records[:2])
        assert first["message"] == "payment a\\nb\\u2028c\\x85{x}<red> stopped" and first["level"] == "WARNING"
        assert "Traceback" in second["message"] and "boom\\nINFO forged line" in second["message"]
    else:
        assert "WARNING" in records[0] and "x: payment a\\nb\\u2028c\\x85{x}<red> stopped" in records[0]
        assert "Traceback" in records[1] and "boom\\nINFO forged line" in records[1]


def test_a_call_record_is_a_line_of_pairs_or_json_keys():
    call = {"node": "gateway", "method": "InitiateTransaction", "caller": "alice", "txn_id": "t 1",
            "amount_minor": 250, "payee": "bob", "code": "OK", "ms": 1.25}
    text = formatted(log_format.text_line, lambda bound: bound.info("call", call=call))
    assert text.endswith(" INFO x: call node=gateway method=InitiateTransaction caller=alice "
                         'txn_id="t 1" amount_minor=250 payee=bob code=OK ms=1.2\n'), text
    record = json.loads(formatted(log_format.json_line, lambda bound: bound.info("call", call=call)))
    assert {k: record[k] for k in call} == call and record["message"] == "call"


def test_strife_logs_shows_old_raw_lines_escaped(tmp_path):
    path = tmp_path / "gateway.log"
    path.write_bytes(b"one \x1b[31mred\x00\n" + "two\u2028three\x85\n".encode() + b"four\rfive\n")
    assert logs.tail(path, 10) == ["one \\x1b[31mred\\x00", "two\\u2028three\\x85", "four\\rfive"]
    assert logs.tail(tmp_path / "empty.log", 10) == []
    seen, appended = [], []
    log = logs.Log("g", path)

    def stop():  # append one line after follow has noted the size, then stop once it is seen
        if not appended:
            with path.open("ab") as f:
                appended.append(f.write(b"new\x1b]0;title\x07\n"))
        return bool(seen)

    logs.follow([log], lambda name, line: seen.append(line), poll=0.01, stop=stop)
    assert seen == ["new\\x1b]0;title\\x07"]


# ---- control requests ----

@pytest.mark.parametrize("request_, field_named", [
    ({"cmd": "pause", "node": "bank1", "seconds": "5"}, "seconds"),
    ({"cmd": "pause", "node": "bank1", "seconds": -1}, "seconds"),
    ({"cmd": "pause", "node": "bank1", "seconds": 0}, "seconds"),
    ({"cmd": "pause", "node": "bank1", "seconds": float("inf")}, "seconds"),
    ({"cmd": "pause", "node": "bank1", "seconds": True}, "seconds"),
    ({"cmd": "pause", "node": "bank1", "seconds": 10 ** 9}, "seconds"),
    ({"cmd": "pause", "node": 7}, "node"),
    ({"cmd": "kill"}, "node"),
    ({"cmd": "restart", "node": "bank1", "timeout": "soon"}, "timeout"),
    ({"cmd": "status", "extra": 1}, "extra"),
    ({"cmd": "explode"}, "cmd"),
    (["status"], "JSON object"),
])
def test_control_requests_are_validated(request_, field_named):
    with pytest.raises(control.BadRequest, match=field_named):
        control.validate(request_)


def test_valid_control_requests():
    assert control.validate({"cmd": "pause", "node": "bank1"}) == {"cmd": "pause", "node": "bank1", "seconds": None}
    assert control.validate({"cmd": "pause", "node": "bank1", "seconds": 2})["seconds"] == 2.0
    assert control.validate({"cmd": "status"}) == {"cmd": "status"}


class _FakeSupervisor:
    def __init__(self):
        self.procs, self.paused = {"bank1": None}, []

    def status(self):
        return {"phase": "running", "nodes": []}

    async def pause(self, name, seconds=None):
        self.paused.append((name, seconds))


def _serve_and(path, uid, client):
    """Run a ControlServer on `path` (allowing `uid`) while `client()` (a coroutine) talks to it."""
    async def go():
        supervisor = _FakeSupervisor()
        server = control_server.ControlServer(supervisor, path, uid=uid)
        await server.start()
        try:
            return await client(), supervisor
        finally:
            await server.close()
    return asyncio.run(go())


def test_the_control_socket_refuses_another_user(tmp_path):
    path = tmp_path / "s.sock"
    answer, _ = _serve_and(path, os.getuid() + 1, lambda: asyncio.to_thread(control.call, path, {"cmd": "status"}))
    assert answer["ok"] is False and f"user id {os.getuid()} may not control" in answer["error"]


def test_the_control_socket_answers_its_own_user_and_refuses_a_bad_pause(tmp_path):
    path = tmp_path / "s.sock"

    async def talk():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        bad = await asyncio.to_thread(control.call, path, {"cmd": "pause", "node": "bank1", "seconds": "5"})
        good = await asyncio.to_thread(control.call, path, {"cmd": "status"})
        return bad, good

    (bad, good), supervisor = _serve_and(path, os.getuid(), talk)
    assert bad["ok"] is False and "seconds" in bad["error"] and supervisor.paused == []
    assert good["ok"] is True


CONNECT_AS_OTHER_USER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"cmd": "status"}\\n')
print(s.recv(65536).decode().strip())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user needs root (setpriv)")
@pytest.mark.skipif(not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs setpriv and /usr/bin/python3")
def test_the_kernel_reports_another_users_connection_and_it_is_refused():
    # a directory and socket 'nobody' may reach: only the uid check stands in the way
    directory = pathlib.Path(tempfile.mkdtemp(prefix="strife-peercred-"))
    try:
        directory.chmod(0o755)
        path = directory / "s.sock"

        async def as_nobody():
            path.chmod(0o666)
            proc = await asyncio.create_subprocess_exec(
                "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                CONNECT_AS_OTHER_USER, str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            return json.loads(out)

        answer, _ = _serve_and(path, os.getuid(), as_nobody)
        assert answer == {"ok": False, "code": "refused",
                          "error": f"refused: user id 65534 may not control a supervisor run by user id {os.getuid()}"}
    finally:
        shutil.rmtree(directory)


def test_peer_uid_is_the_connecting_process_uid():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert control_server.peer_uid(a) == os.getuid()


# ---- files ----

def test_layout_create_makes_an_older_deployment_private(tmp_path):
    layout = Layout(tmp_path)
    for directory in (layout.certs, layout.state / "bank1", layout.logs):
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    old = [layout.state / "bank1" / "ledger.db", layout.state / "bank1" / "ledger.db-wal",
           layout.logs / "bank1.log", layout.state / "credentials.json", layout.certs / "bank1.pem"]
    for path in old:
        path.write_text("x")
        path.chmod(0o644)
    layout.state.chmod(0o755)
    layout.create()
    for path in (layout.certs, layout.state, layout.state / "bank1", layout.logs):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in old:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
