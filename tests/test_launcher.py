"""The launcher end to end: the real `strife` command, real etcd and node processes, temp dirs.
`up`, a `down` and what follows logs or forks run as processes of their own; the other commands in
this process (`Deployment.cli`: the same main, output and exit code, without a process start)."""
import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import psutil

from strife.client.gateway_client import GatewayClient
from strife.deployment import topology
from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from tests.helpers import SMALL_TOPOLOGY, STRIFE, etcd_key, processes_of, settled, wait_for


def test_up_status_down_leaves_no_process_and_another_deployment_alone(deployment, live):
    """Also: two topologies run side by side (the same bank names in both, `live` the other), and
    stopping this one leaves the other's processes as they were."""
    d = deployment()
    result = d.up()
    assert "nodes healthy" in result.stdout
    status = json.loads(d.cli("status", "--json").stdout)  # the command's own JSON
    assert status["running"] and status["phase"] == "ready"
    nodes = {n["name"]: n for n in status["nodes"]}
    assert list(nodes) == ["etcd", "bank1", "bank2", "gateway", "admin", "alice", "bob"]
    for n in nodes.values():
        assert n["state"] == "RUNNING" and n["health"] == "SERVING", n
        assert psutil.pid_exists(n["pid"]) and n["restarts"] == 0
        assert n["address"].startswith("127.0.0.1:") and not n["address"].endswith(":0")
    for bank in ("bank1", "bank2"):
        assert etcd_key(d.home, f"/strife/banks/{bank}")[0] == nodes[bank]["address"]
    others = {n["name"]: n["address"] for n in live.status()["nodes"]}
    assert {n["address"] for n in nodes.values()}.isdisjoint(others.values())
    assert etcd_key(live.home, "/strife/banks/bank1")[0] == others["bank1"]
    running = {n["name"]: n["pid"] for n in live.status()["nodes"] if n["state"] == "RUNNING"}
    again = d.run("up", "-d")
    assert again.returncode != 0 and "already up" in again.stderr
    table = d.cli("status")
    assert table.returncode == 0 and "bank2" in table.stdout and "SERVING" in table.stdout
    assert (d.home / "logs" / "bank1.log").read_text().count("serving on") == 1

    # A real node ends with 0 on SIGTERM, and on-failure (the default) leaves a clean exit alone
    # (restart policies themselves: test_supervisor_policy.py, with fake processes).
    os.kill(nodes["bob"]["pid"], signal.SIGTERM)
    wait_for(lambda: d.node("bob")["state"] == "EXITED", what="on-failure leaves a clean exit alone")
    assert d.node("bob")["last_exit"] == 0
    assert d.cli("chaos", "--pause", "alice").returncode == 0  # `down` must continue it to stop it

    down = d.run("down")  # up and down as a user runs them: processes of their own
    assert down.returncode == 0, down.stderr
    assert processes_of(d.home) == []
    for n in nodes.values():
        assert not psutil.pid_exists(n["pid"]) or psutil.Process(n["pid"]).status() == psutil.STATUS_ZOMBIE
    after = d.cli("status", "--json")
    assert after.returncode == 3 and '"running": false' in after.stdout
    supervisor_log = (d.home / "logs" / "supervisor.log").read_text()
    assert "Traceback" not in supervisor_log and "SIGKILL" not in supervisor_log  # nobody had to be killed
    assert {n["name"]: n["pid"] for n in live.status()["nodes"] if n["state"] == "RUNNING"} == running


def test_killed_bank_is_restarted_healthy_and_registered_again(live):
    d = live
    before = wait_for(lambda: (n := d.node("bank2"))["state"] == "RUNNING" and n, what="bank2 running")
    _, lease_before = etcd_key(d.home, "/strife/banks/bank2")
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (n := d.node("bank2"))["state"] == "RUNNING" and n["pid"] not in (None, before["pid"]) and n,
                     timeout=30, what="bank2 restarted")
    assert after["restarts"] == before["restarts"] + 1 and after["health"] == "SERVING"
    value, lease_after = etcd_key(d.home, "/strife/banks/bank2")
    assert value == after["address"] and lease_after not in (None, lease_before)


def test_a_node_that_always_crashes_ends_fatal_and_up_reports_it(deployment):
    d = deployment(SMALL_TOPOLOGY.replace("bank2: {}", "bank2: {max_restarts: 2, failpoints: {start: crash}}"))
    result = d.run("up", "-d")
    assert result.returncode == 1
    assert "bank2 failed to start: FATAL after 2 restarts" in result.stderr
    bank2 = d.node("bank2")
    assert bank2["state"] == "FATAL" and bank2["restarts"] == 2 and bank2["pid"] is None
    assert d.node("gateway")["state"] == "STOPPED"  # dependents are not started without their banks
    assert d.cli("down").returncode == 0
    assert processes_of(d.home) == []


def test_restart_command_replaces_the_process(live):
    d = live
    before = wait_for(lambda: (n := d.node("gateway"))["state"] == "RUNNING" and n, what="gateway running")
    result = d.cli("restart", "gateway")
    assert result.returncode == 0, result.stderr
    after = d.node("gateway")
    assert after["pid"] != before["pid"] and after["state"] == "RUNNING"
    assert after["restarts"] == before["restarts"] + 1
    unknown = d.cli("restart", "nosuch")
    # bad input, as for `strife chaos --kill nosuch` (it used to exit 1)
    assert unknown.returncode == 2 and "no node named 'nosuch'" in unknown.stderr


def alive(pid):
    """Running, and not a zombie; an orphan may be reaped between two looks at it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def foreground_up(d):
    """`strife up` in the foreground until all nodes are healthy, then Ctrl-C: (exit code, output, node pids)."""
    proc = subprocess.Popen([*STRIFE, "up"], cwd=d.home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "nodes healthy" in line:
                break
        pids = [n["pid"] for n in d.status()["nodes"]]
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines), rest, pids


def test_foreground_starts_are_clean_print_prefixed_logs_and_ctrl_c_stops_everything(deployment):
    """The foreground CLI holds gRPC threads when it spawns nodes: no fork-handler warning, and no
    node dies at birth (it used to, one start in four, by SIGABRT in gRPC's poller: grpc/grpc#43055).
    The odds are test_spawning.py's, with hundreds of spawns; these starts prove the whole path."""
    d = deployment()
    for attempt in range(3):
        code, started, rest, pids = foreground_up(d)
        output = started + rest
        assert code == 0 and "all 7 nodes healthy" in started, (attempt, output)
        assert any("bank1" in line and "| " in line and "serving on" in line for line in started.splitlines()), \
            (attempt, started)
        assert "stopped" in rest, (attempt, rest)
        for sign in ("fork_posix.cc", "skipping fork() handlers", "restarting", "exited with", "epoll"):
            assert sign not in output, (attempt, sign, output)
        assert processes_of(d.home) == []
        assert not any(psutil.pid_exists(p) for p in pids)


def test_logs_command_shows_a_node_and_refuses_unknown_ones(live):
    d = live
    one = d.cli("logs", "bank1", "-n", "5")  # the shared deployment's latest lines: bank1's only
    assert one.returncode == 0 and 0 < len(one.stdout.splitlines()) <= 5
    assert "serving on" in d.cli("logs", "bank1").stdout
    every = d.cli("logs")
    assert "gateway" in every.stdout and "bank2" in every.stdout
    assert d.cli("logs", "nosuch").returncode == 2
    follow = subprocess.Popen([*STRIFE, "logs", "bank1", "-f", "-n", "1"], cwd=d.home, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert follow.stdout.readline()  # the last line so far: the follower is running
        deadline, seen = time.monotonic() + 30, ""
        while "ViewBalance" not in seen and time.monotonic() < deadline:
            d.cli("client", "alice", "balance")  # bank1 logs a ViewBalance call
            if select.select([follow.stdout], [], [], 2)[0]:
                seen = follow.stdout.readline()
        assert "ViewBalance" in seen, seen
    finally:
        follow.terminate()
        follow.wait(10)


def test_detached_nodes_write_their_own_log_files(live):
    """A node's log lines reach logs/<node>.log without the supervisor copying them: they keep
    coming while the supervisor is stopped (it used to be a pipe through the supervisor)."""
    d = live
    alice = settled(d.home)["alice"]
    supervisor = d.status()["pid"]
    log = Layout(d.home).log("gateway")
    os.kill(supervisor, signal.SIGSTOP)
    try:
        async def balance():
            async with GatewayClient(load_deployment(d.home), "alice") as alice:
                return await alice.balance()
        before = log.read_text().count("method=ViewBalance")
        assert asyncio.run(balance()).balance_minor == alice
        wait_for(lambda: log.read_text().count("method=ViewBalance") == before + 1, timeout=10,
                 what="the gateway's call-log line while its supervisor is stopped")
    finally:
        os.kill(supervisor, signal.SIGCONT)


def test_three_member_etcd_cluster_started_where_a_strife_folder_cannot_shadow_the_package(deployment):
    d = deployment(SMALL_TOPOLOGY.replace("members: 1", "members: 3"))
    planted = d.home / "strife"
    planted.mkdir()
    (planted / "__init__.py").write_text("raise ImportError('the planted strife/ folder was imported')\n")
    (planted / "nodes").mkdir()
    (planted / "nodes" / "__init__.py").write_text("raise ImportError('the planted strife/ folder was imported')\n")
    def strife(*args):  # the CLI itself runs in safe-path mode too: this test is about what it spawns
        return subprocess.run([sys.executable, "-P", "-m", "strife", *args], cwd=d.home, capture_output=True,
                              text=True, timeout=180)
    try:
        result = strife("up", "-d")
        assert result.returncode == 0, result.stdout + result.stderr
        nodes = json.loads(strife("status", "--json").stdout)["nodes"]
        assert all(n["state"] == "RUNNING" and n["restarts"] == 0 for n in nodes), nodes
    finally:
        shutil.rmtree(planted)  # lets the fixture's teardown run `strife down` as usual
    assert "planted" not in "".join(p.read_text() for p in (d.home / "logs").glob("*.log"))
    members = [n for n in d.status()["nodes"] if n["kind"] == "etcd"]
    assert [m["name"] for m in members] == ["etcd1", "etcd2", "etcd3"]
    assert all(m["state"] == "RUNNING" for m in members)
    assert etcd_key(d.home, "/strife/banks/bank2")[0] == d.node("bank2")["address"]
    # verify compares the members' data (strife/checks/etcd_agreement.py); a paused one is left out
    verified = d.cli("verify", "--json")
    agreement = json.loads(verified.stdout)["etcd_agreement"]
    assert verified.returncode == 0 and agreement["compared"] == ["etcd1", "etcd2", "etcd3"], verified.stdout
    assert agreement["revision"] > 0 and agreement["left_out"] == {}
    assert d.cli("chaos", "--pause", "etcd3").returncode == 0
    try:
        verified = d.cli("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "etcd: 2 members compared at revision" in verified.stdout and "etcd3 left out" in verified.stdout
    finally:
        assert d.cli("chaos", "--resume", "etcd3").returncode == 0


def test_an_existing_etcd_is_used_instead_of_spawning_one(deployment, tmp_path):
    from strife.launcher import etcd as etcd_launcher
    from strife.launcher.ports import _free
    port = _free("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    d = deployment(SMALL_TOPOLOGY.replace("members: 1", f"endpoints: ['127.0.0.1:{port}']"))
    binary = etcd_launcher.find_binary(topology.load(d.home / "topology.yaml"))
    external = subprocess.Popen([binary, "--data-dir", str(tmp_path / "external"), "--listen-client-urls", url,
                                 "--advertise-client-urls", url, "--listen-peer-urls",
                                 f"http://127.0.0.1:{_free('127.0.0.1', 0)}", "--log-level", "error"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        d.up()
        names = [n["name"] for n in d.status()["nodes"]]
        assert "etcd" not in names and names[0] == "bank1"  # nothing spawned for etcd
        assert etcd_key(d.home, "/strife/banks/bank2")[0] == d.node("bank2")["address"]
    finally:
        d.cli("down")
        external.terminate()
        external.wait(10)


def test_a_paused_node_killed_through_chaos_is_started_again(live):
    """SIGKILL reaches a stopped process group; the rest of pause-and-die (a crash while paused,
    FATAL past the limit) is policy: test_supervisor_policy.py, with fake processes."""
    d = live
    bob = wait_for(lambda: (n := d.node("bob"))["state"] == "RUNNING" and n, what="bob running")
    assert d.cli("chaos", "--pause", "bob").returncode == 0
    assert d.node("bob")["state"] == "PAUSED"
    assert d.cli("chaos", "--kill", "bob").returncode == 0
    again = wait_for(lambda: (n := d.node("bob"))["state"] == "RUNNING" and n["pid"] not in (None, bob["pid"]) and n,
                     what="bob, killed while paused, restarted")
    assert again["restarts"] == bob["restarts"] + 1 and psutil.pid_exists(again["pid"])
    assert not psutil.pid_exists(bob["pid"]) or psutil.Process(bob["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_kill_ordered_through_chaos_restarts_at_once_then_a_killed_supervisor_leaves_no_orphans(deployment):
    d = deployment(SMALL_TOPOLOGY.replace("bank2: {}", "bank2: {max_restarts: 1}")
                   .replace("warm_spares: false", "warm_spares: true"))
    d.up()
    log = d.home / "logs" / "supervisor.log"
    for n in range(1, 4):  # more kills, closer together, than bank2 may fail
        before = d.node("bank2")
        # each kill once the supervisor has made its next spare (SPARE_AFTER a spare is used): two banks
        # and a nameless bank process (a used spare keeps its nameless command line, so counted, not named)
        wait_for(lambda: len([p for p in processes_of(d.home) if "strife.nodes.bank" in p.info["cmdline"]]) == 3,
                 what="a warm bank spare ready")
        assert d.cli("chaos", "--kill", "bank2").returncode == 0
        after = wait_for(lambda: (b := d.node("bank2"))["state"] == "RUNNING" and b["pid"] not in (None, before["pid"]) and b,
                         what=f"bank2 back after kill {n}")
        assert after["restarts"] == n
    assert log.read_text().count("bank2 killed on request; starting it again at once") == 3
    # the new process was a warm spare, made ahead of time: it did not import its code after the kill
    healthy = [line for line in log.read_text().splitlines() if "bank2 healthy in" in line]
    assert len(healthy) == 4 and all("(warm, imported" in line for line in healthy), healthy
    assert "bank2 exited with -9; restarting in" not in log.read_text()
    os.kill(d.node("bank2")["pid"], signal.SIGKILL)  # a crash nobody ordered still counts
    wait_for(lambda: "bank2 exited with -9; restarting at once (restart 1 of at most 1)" in log.read_text(),
             what="the crash judged by the restart policy")
    wait_for(lambda: d.node("bank2")["state"] == "RUNNING", what="bank2 restarted after its crash")

    # Then the supervisor itself is killed: its nodes (spares included) die with it, no orphans.
    status = d.status()
    pids = [n["pid"] for n in status["nodes"]]
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: not any(map(alive, pids)) and not processes_of(d.home), timeout=20,
             what="every node to die with its supervisor")
    assert d.cli("status").returncode == 3  # the stale socket is not mistaken for a running supervisor
    d.up()  # and a fresh `up` works
    assert d.status()["phase"] == "ready"
