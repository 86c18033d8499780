"""Logs (issue 11 "Logs grow without end", issue 13 on `strife logs`): rotation and retention by
size, JSON lines with the call fields, one line per record whatever reaches the log, reading
across rotations in time order, and commands that behave when their output pipe closes."""
import asyncio
import json
import queue
import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest

from strife.client.gateway_client import GatewayClient
from strife.deployment.topology import load_deployment
from strife.launcher import logs
from tests.helpers import SMALL_TOPOLOGY, STRIFE, wait_for, started

ROTATED_NAME = re.compile(r"n\.\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}(\.\d+)?\.log")


def run_logging(tmp_path, body, max_bytes=4096, keep=2, fmt="text"):
    """Run `body` in a fresh process whose log is configured as a node's (log file tmp_path/n.log)."""
    script = textwrap.dedent(f"""
        import logging, os, pathlib, sys
        from loguru import logger
        from strife.core import log_setup
        from strife.deployment.topology import Settings
        settings = Settings(log_max_bytes={max_bytes}, log_keep={keep}, log_format={fmt!r})
        with log_setup.process_log(pathlib.Path({str(tmp_path / "n.log")!r}), "bank1", settings):
        """) + textwrap.indent(textwrap.dedent(body), "    ")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def log_files(tmp_path):
    return sorted(p.name for p in tmp_path.glob("n*.log"))


def test_a_log_rotates_at_the_configured_size_and_keeps_log_keep_old_files(tmp_path):
    done = run_logging(tmp_path, """
        for i in range(2000):
            logging.getLogger("bank1").info("record %05d %s", i, "x" * 40)
    """, max_bytes=4096, keep=2)
    assert done.returncode == 0, done.stderr
    files = log_files(tmp_path)
    rotated = [name for name in files if name != "n.log"]
    assert "n.log" in files and len(rotated) == 2 and all(ROTATED_NAME.fullmatch(n) for n in rotated), files
    for name in files:
        assert (tmp_path / name).stat().st_size <= 4096
    # the newest records are kept, in order, across the files; the oldest were removed
    kept = [line for path in logs.rotated(tmp_path / "n.log") + [tmp_path / "n.log"]
            for line in path.read_text().splitlines()]
    numbers = [int(re.search(r"record (\d+)", line).group(1)) for line in kept]
    assert numbers == list(range(numbers[0], 2000)) and numbers[0] > 1000


def test_keep_zero_leaves_only_the_current_file(tmp_path):
    done = run_logging(tmp_path, """
        for i in range(500):
            logging.getLogger("x").info("record %d %s", i, "y" * 40)
    """, max_bytes=4096, keep=0)
    assert done.returncode == 0, done.stderr
    assert log_files(tmp_path) == ["n.log"]


HOSTILE = "bob\n2030-01-01 00:00:00,000 INFO strife.calls: call forged\u2028\x85\r\x1b[2J\"{x}<red>"


def test_json_lines_carry_the_call_fields_as_keys(tmp_path):
    done = run_logging(tmp_path, f"""
        import asyncio
        from strife.nodes.interceptors import CallLogInterceptor
        from strife.rpc import cl_gw_pb2 as cl

        class Context:
            def auth_context(self):
                return {{}}

            def code(self):
                return None

        async def behaviour(request, context):
            return None

        request = cl.InitiateTransactionRequest(txn_id={HOSTILE!r}, payee="bob", amount_minor=250)
        asyncio.run(CallLogInterceptor("gateway")._logged("InitiateTransaction")(behaviour, request, Context()))
        logging.getLogger("gateway").warning("a plain record %s", {HOSTILE!r})
    """, fmt="json")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "n.log").read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 3, lines
    call, plain = (json.loads(line) for line in lines[:2])
    assert {k: call[k] for k in ("node", "method", "caller", "amount_minor", "payee", "code")} == {
        "node": "gateway", "method": "InitiateTransaction", "caller": "-", "amount_minor": 250,
        "payee": "bob", "code": "OK"}
    assert isinstance(call["ms"], float) and call["message"] == "call" and call["level"] == "INFO"
    assert call["txn_id"].startswith("bob\\n2030-01-01") and "\\u2028" in call["txn_id"]  # escaped, as in text
    assert plain["logger"] == "gateway" and plain["level"] == "WARNING" and "\\x1b[2J" in plain["message"]
    assert all(0x20 <= ord(c) < 0x7f for c in "".join(lines))  # ASCII only: nothing can split a line


def test_whatever_reaches_the_log_is_one_line_per_record(tmp_path):
    done = run_logging(tmp_path, r"""
        os.write(2, b"E1126 03:34:07.849123   12345 ev_epoll1_linux.cc:373] epoll_wait error: \x1b[31mBad\r\n")
        os.write(1, b"a stray print\xc2\x85with\xe2\x80\xa8separators\n")
        print("from python", file=sys.stderr)
        raise RuntimeError("boom\nforged line")
    """)
    assert done.returncode == 1  # the process still fails as an uncaught exception would
    assert done.stderr == ""  # everything went to the log (stdout, a pipe, had the coloured copy)
    text = (tmp_path / "n.log").read_text()
    records = text.split("\n")[:-1]
    assert len(records) == 4, records
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ", r) for r in records), records

    def record(marker):
        found = [r for r in records if marker in r]
        assert len(found) == 1, (marker, records)
        return found[0]
    assert "\\x1b[31mBad" in record(" ERROR grpc: E1126 ")
    assert "a stray print\\x85with\\u2028separators" in record(" WARNING stderr: a stray")
    assert " WARNING stderr: from python" in record("from python")
    assert "Traceback" in record(" CRITICAL bank1: ") and "boom\\nforged line" in record(" CRITICAL ")
    for invisible in ("\r", "\x1b", "\u2028", "\x85"):
        assert invisible not in text


def write_lines(path, stamps_and_texts):
    path.write_text("".join(f"{stamp} INFO x: {text}\n" for stamp, text in stamps_and_texts))


def test_several_logs_merge_in_time_order(tmp_path):
    write_lines(tmp_path / "a.log", [("2026-01-01 10:00:00,100", "a1"), ("2026-01-01 10:00:00,300", "a2")])
    with (tmp_path / "a.log").open("a") as f:
        f.write("Traceback (no time of its own)\n9999-99-99 99:99:99,000 INFO x: no such time\n")
    write_lines(tmp_path / "b.log", [("2026-01-01 10:00:00,200", "b1"), ("2026-01-01 10:00:00,400", "b2")])
    opened = [logs.Log("a", tmp_path / "a.log"), logs.Log("b", tmp_path / "b.log")]
    shown = [(name, line.split(": ")[-1]) for name, line in logs.merged_tail(opened, 10)]
    assert shown == [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "Traceback (no time of its own)"),
                     ("a", "no such time"), ("b", "b2")]


def test_reading_spans_rotated_files_and_following_moves_on_after_a_rotation(tmp_path):
    """A writer logs numbered records with rotation every 4 KB while a Log follows: it sees every
    record exactly once and in order, across several rotations; looking back spans the files."""
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import logging, pathlib, sys, time
        from strife.core import log_setup
        from strife.deployment.topology import Settings
        with log_setup.process_log(pathlib.Path({str(tmp_path / "n.log")!r}), "n",
                                   Settings(log_max_bytes=4096, log_keep=50)):
            for i in range(600):
                logging.getLogger("n").info("record %05d", i)
                if i % 20 == 0:
                    time.sleep(0.01)
    """)])
    wait_for(lambda: (tmp_path / "n.log").exists(), what="the log file")
    follower = logs.Log("n", tmp_path / "n.log")
    seen = [line for _, line in follower.tail(10_000)]

    def collect():
        seen.extend(line for _, line in follower.new_lines())
        return writer.poll() is not None and "record 00599" in (seen[-1] if seen else "")
    wait_for(collect, timeout=60, what="every record to be followed")
    follower.close()
    numbers = [int(re.search(r"record (\d+)", line).group(1)) for line in seen]
    assert numbers == list(range(600)), numbers[:20]
    assert len(logs.rotated(tmp_path / "n.log")) >= 3  # it did rotate, several times
    assert [line for _, line in logs.Log("n", tmp_path / "n.log").tail(600)] == seen  # looking back too


# ---- a deployment with JSON logs that rotate quickly ----

ROTATING = SMALL_TOPOLOGY.replace("backoff: 200ms", "backoff: 200ms\n  log_max_bytes: 4KB\n  log_keep: 2\n"
                                                    "  log_format: json")


@pytest.fixture(scope="module")
def rotating(tmp_path_factory):
    with started(tmp_path_factory, "rotating", ROTATING) as d:
        yield d


def balance_calls(home, count):
    """`count` balance calls as alice: a call-log record each on the gateway and on bank1."""
    async def calls():
        async with GatewayClient(load_deployment(home), "alice") as alice:
            for _ in range(count):
                await alice.balance()
    asyncio.run(calls())


def test_a_deployment_writes_json_lines_that_rotate_and_logs_reads_across_them(rotating):
    d = rotating
    gateway = d.home / "logs" / "gateway.log"
    seen_rotated = set()
    while len(seen_rotated) < 4:  # a record is ~300 bytes: a rotation every ~13 calls
        balance_calls(d.home, 10)
        seen_rotated.update(logs.rotated(gateway))
        assert len(logs.rotated(gateway)) <= 2  # log_keep: older files are removed
    assert gateway.stat().st_size <= 4096
    for path in [*logs.rotated(gateway), gateway]:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record["node"] == "gateway" and {"time", "level", "logger", "message"} <= set(record)
    calls = [json.loads(line) for line in gateway.read_text().splitlines() if '"message":"call"' in line]
    assert calls and {"node", "method", "caller", "code", "ms"} <= set(calls[-1])
    assert calls[-1]["method"] == "ViewBalance" and calls[-1]["caller"] == "alice"
    in_current = len(gateway.read_text().splitlines())
    shown = d.cli("logs", "gateway", "-n", str(in_current + 5))
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == in_current + 5  # the older file too
    assert shown.stdout.splitlines()[-in_current:] == gateway.read_text().splitlines()


def test_logs_follow_goes_on_into_the_new_file_after_a_rotation(rotating):
    gateway = rotating.home / "logs" / "gateway.log"
    follow = subprocess.Popen([*STRIFE, "logs", "gateway", "-f", "-n", "1"], cwd=rotating.home,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout.readline()  # the last line so far: the follower is running
        before = set(logs.rotated(gateway))
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout], daemon=True).start()
        calls = 0
        for made in range(5, 45, 5):  # about three rotations, in steps the follower keeps up with
            balance_calls(rotating.home, 5)  # (with log_keep: 2, a file may go before it is read)
            while calls < made:
                calls += '"method":"ViewBalance"' in lines.get(timeout=30)
        assert set(logs.rotated(gateway)) - before  # it did rotate meanwhile
    finally:
        follow.terminate()
        follow.wait(10)


def test_logs_merges_every_node_and_the_supervisor_in_time_order(rotating):
    shown = rotating.cli("logs", "-n", "20")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    names = {line.split("|", 1)[0].strip() for line in lines}
    assert {"supervisor", "gateway", "bank1", "alice"} <= names, names
    times = [logs.line_time(line.split("| ", 1)[1]) for line in lines]
    assert None not in times and times == sorted(times)
    supervisor = rotating.cli("logs", "supervisor")
    assert supervisor.returncode == 0 and "all 7 nodes healthy" in supervisor.stdout


@pytest.mark.parametrize("command, reader", [
    ("logs", "head -1"), ("logs -n 1000", "true"), ("status", "head -1"), ("status", "true"),
    ("--help", "true"), ("client alice history", "true"),
])
def test_a_command_whose_reader_goes_away_ends_quietly(rotating, command, reader):
    """`strife logs | head -1` and friends: no BrokenPipeError traceback, and the status of a Unix
    tool (0 when everything fitted into the pipe before the reader left, else SIGPIPE's 141)."""
    done = piped(rotating, f"{command} | {reader}")
    assert done.stderr == "", done.stderr
    assert done.status in (0, 141), done.status


def test_logs_follow_ends_quietly_once_its_reader_goes_away(rotating):
    """`strife logs -f | head -1`: it notices when it writes the next line."""
    follow = subprocess.Popen(["bash", "-c", f"{' '.join(STRIFE)} logs gateway -f | head -1; "
                                             f"echo \"exit=${{PIPESTATUS[0]}}\" >&2"],
                              cwd=rotating.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: balance_calls(rotating.home, 1) or follow.poll() is not None, timeout=60,
                 what="the follower to end after head")
        out, err = follow.communicate(timeout=10)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert err.strip() == "exit=141", err


class Piped:
    def __init__(self, done):
        self.stderr, _, status = done.stderr.rpartition("exit=")
        self.status = int(status)


def piped(d, pipeline):
    """Run `strife ...` piped into a reader through bash; its stderr and the status of strife."""
    return Piped(subprocess.run(["bash", "-c", f"{' '.join(STRIFE)} {pipeline}; echo \"exit=${{PIPESTATUS[0]}}\" >&2"],
                                cwd=d.home, capture_output=True, text=True, timeout=120))


def test_following_reads_no_rotated_file_twice_when_rotations_share_a_timestamp(tmp_path):
    """A file rotated before the one being followed, with the same mtime (two rotations within
    one tick of the file system's clock), is not read again: only the files rotated after it are."""
    path = tmp_path / "n.log"
    path.write_text("")
    follower = logs.Log("n", path)
    path.write_text("2026-11-26 10:00:00,000 INFO n: one\n")
    assert [line for _, line in follower.new_lines()] == ["2026-11-26 10:00:00,000 INFO n: one"]
    first = tmp_path / "n.2026-11-26_10-00-00_000000.log"
    path.rename(first)  # rotated once, already read; then a new file, rotated again in the same tick
    path.write_text("2026-11-26 10:00:00,001 INFO n: two\n")
    assert [line for _, line in follower.new_lines()] == ["2026-11-26 10:00:00,001 INFO n: two"]
    second = tmp_path / "n.2026-11-26_10-00-00_000001.log"
    path.rename(second)
    path.write_text("2026-11-26 10:00:00,002 INFO n: three\n")
    same = os.stat(second).st_mtime_ns
    os.utime(first, ns=(same, same))
    seen = [line for _, line in follower.new_lines()]
    follower.close()
    assert seen == ["2026-11-26 10:00:00,002 INFO n: three"], seen
