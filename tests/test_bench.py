"""`strife bench` for a second or so: every figure present and sane (no timed assertion), the plot,
the text report, the gateway's metrics counting what it did, and a bench with nothing running.

A bench run costs seconds of both cores, so one run on the shared deployment (--json --plot, the
gateway's metrics read before and after) serves the figures, the plot and the metrics; the text
report is that of the bench that starts its own deployment: one run of its own, as short as allowed."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import textwrap

import psutil
import pytest

from strife.deployment.topology import load_deployment
from strife.observe import scrape
from tests.helpers import SMALL_TOPOLOGY, STRIFE, pending_payments, processes_of, settled, wait_for

# short: every phase still ends with its progress line, and the tracing
# rounds take 4 x 0.5 s whatever --seconds says
SECONDS = "1"      # the shortest run with two turns of each load (alternate.py)
SHORTEST = "0.5"


@dataclasses.dataclass
class BenchRun:
    result: object      # the finished `strife bench --json --plot`
    figures: dict
    plot: object        # the PNG it was asked to write
    money: int          # the deployment's total balance before it
    metrics_before: list
    metrics_after: list


def gateway_metrics(d):
    return scrape.scrape(d.home, load_deployment(d.home).node("gateway"), timeout=5)


@pytest.fixture(scope="module")
def bench(live, tmp_path_factory):
    money = sum(settled(live.home).values())
    # the gateway's counters must move by the bench's payments alone: nothing left queued to deliver
    users = [c.name for c in load_deployment(live.home).of_kind("client")]
    wait_for(lambda: not any(pending_payments(live.home, u) for u in users), what="every outbox empty")
    before = gateway_metrics(live)
    plot = tmp_path_factory.mktemp("bench") / "latency.png"
    result = live.run("bench", "--seconds", SECONDS, "--concurrency", "4", "--json", "--plot", str(plot), "--floor",
                      timeout=300)
    after = gateway_metrics(live)
    assert result.returncode == 0, result.stderr
    return BenchRun(result, json.loads(result.stdout), plot, money, before, after)


def test_bench_reports_every_figure(live, bench):
    before, result, figures = bench.money, bench.result, bench.figures
    phases = {name: figures[name] for name in ("payments", "payments_single", "payments_single_same_bank", "echo",
                                                 "echo_single")}
    phases.update({f"payments {kind}": f for kind, f in figures["payments_by_kind"].items()})
    assert set(figures["payments_by_kind"]) == {"cross-bank", "same-bank"}
    assert sum(f["count"] for f in figures["payments_by_kind"].values()) == figures["payments"]["count"]
    for phase, f in phases.items():
        assert f["ok"] > 0 and f["errors"] == 0, (phase, f)
        assert 0 < f["p50_ms"] <= f["p90_ms"] <= f["p99_ms"] <= f["max_ms"], (phase, f)
        assert f["per_s"] > 0
    assert figures["ratio"] == round(figures["payments"]["per_s"] * 6 / figures["echo"]["per_s"], 3)
    assert figures["single_p50_over_echo_p50"] > 0 and figures["same_bank_single_p50_over_echo_p50"] > 0
    stages = figures["stages_ms"]  # where a lone cross-bank payment's time goes, in the stages
    assert list(stages) == ["total", "client->gateway", "prepare", "decision", "gateway, other", "reply"]
    assert all(0 < stages[name] < stages["total"] for name in ("client->gateway", "prepare", "decision", "reply"))
    assert 0 <= stages["gateway, other"] < stages["total"]
    assert set(figures["rss_peak_mb"]) == {"gateway", "bank1", "bank2"}
    assert all(mb > 10 for mb in figures["rss_peak_mb"].values())
    assert figures["accounts"] >= 8 and figures["concurrency"] == 4 and figures["deployment"] == str(live.home)
    # two turns each: the callers of the second send new transaction ids (a repeated one with
    # another payee is refused, and counted as an error above)
    assert figures["slices"] == {"many_callers": 2, "single_caller": 2}
    # where the CPU went, by process: every process of the deployment, and the load generator
    payment_cpu, echo_cpu = figures["cpu_ms_per_payment"], figures["cpu_ms_per_echo"]
    assert {"gateway", "bank1", "bank2", "etcd", "supervisor", "load generator", "total"} <= set(payment_cpu)
    assert payment_cpu["gateway"] > 0 and payment_cpu["bank1"] > 0 and payment_cpu["load generator"] > 0
    assert set(echo_cpu) == {"echo server", "load generator", "total"} and echo_cpu["echo server"] > 0
    for cpu in (payment_cpu, echo_cpu):
        parts = sum(ms for name, ms in cpu.items() if name != "total")
        assert abs(cpu["total"] - parts) < 0.01 * len(cpu), cpu
    # the same payments with tracing on and off, in this run (strife/checks/bench/trace_cost.py)
    tracing = figures["tracing"]
    assert tracing["switched"] == ["bank1", "bank2", "gateway"] and tracing["trace_sample"] == 1.0
    for side in ("on", "off"):
        assert tracing[side]["payments"]["ok"] > 0 and tracing[side]["payments"]["errors"] == 0, tracing
        assert tracing[side]["cpu_ms_per_payment"]["gateway"] > 0
    on, off = tracing["on"]["cpu_ms_per_payment"]["total"], tracing["off"]["cpu_ms_per_payment"]["total"]
    assert tracing["difference_pct"] == round((on - off) / off * 100, 1)
    switched = {side: sum(tracing[side]["cpu_ms_per_payment"][n] for n in tracing["switched"]) for side in ("on", "off")}
    assert tracing["switched_difference_pct"] == round((switched["on"] - switched["off"]) / switched["off"] * 100, 1)
    # a short bench measures one round (from --seconds 5, three or more), paced below what the callers reached
    assert len(tracing["rounds_difference_pct"]) == 1 and tracing["median_difference_pct"] is not None
    assert 0 < tracing["paced_per_s"] < figures["payments"]["per_s"]
    assert tracing["by_process_ms"]["gateway"] == round(tracing["on"]["cpu_ms_per_payment"]["gateway"]
                                                        - tracing["off"]["cpu_ms_per_payment"]["gateway"], 3)
    assert scrape.total(scrape.scrape(live.home, load_deployment(live.home).node("gateway")), "strife_tracing") == 1
    # bench accounts were registered with deposits: the audit still balances
    assert live.cli("verify").returncode == 0
    assert sum(settled(live.home).values()) >= before
    assert "s  " in result.stderr  # the progress lines
    assert "Traceback" not in result.stderr, result.stderr  # nor a stand-in's complaint as it stops


def test_bench_measures_the_floor_beside_the_payments(bench):
    """--floor: the same phases through do-nothing stand-ins of a payment's shape (floor.py), with
    the many-caller phase's share of same-bank payments, judged against the same echo, taken in
    the same turns as the payments and the echo."""
    figures = bench.figures
    floor = figures["floor"]
    for phase in ("payments", "payments_single", "payments_single_same_bank"):
        f = floor[phase]
        assert f["ok"] > 0 and f["errors"] == 0 and 0 < f["p50_ms"] <= f["p99_ms"] <= f["max_ms"], (phase, f)
    # the many callers' mix of same-bank payments, made through the stand-ins too (its expected share:
    # what the payments did, give or take chance)
    kinds = figures["payments_by_kind"]
    assert 0 < floor["same_bank_share"] < 1
    assert abs(floor["same_bank_share"] - kinds["same-bank"]["count"] / figures["payments"]["count"]) < 0.2
    assert floor["ratio"] == round(floor["payments"]["per_s"] * 6 / figures["echo"]["per_s"], 3)
    assert floor["single_p50_over_echo_p50"] == round(
        floor["payments_single"]["p50_ms"] / figures["echo_single"]["p50_ms"], 2)
    # in turns with the payments, not after them: the floor's first turn before the payments' second
    turns = [" ".join(m.groups()) for m in re.finditer(r"^(\S.*?)\s+(\d/\d)\s+[\d.]+s ", bench.result.stderr, re.M)]
    assert turns.index("floor, 4 callers 1/2") < turns.index("payments, 4 callers 2/2")
    assert turns.index("floor, cross-bank, 1 caller 1/2") < turns.index("cross-bank, 1 caller 2/2")
    cpu = floor["cpu_ms_per_payment"]
    assert {"floor gateway", "floor bank a", "floor bank b", "floor decider", "load generator", "total"} == set(cpu)
    assert cpu["floor gateway"] > 0 and cpu["floor bank a"] > 0
    # the stand-ins are gone with their phases
    assert not [p for p in psutil.process_iter(["cmdline"]) if "strife.checks.bench.floor" in (p.info["cmdline"] or [])]


def test_bench_plot_writes_a_png(bench):
    target = bench.plot
    assert bench.figures["plot"] == str(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000


def test_metrics_count_what_a_bench_run_did(bench):
    before, after = bench.metrics_before, bench.metrics_after
    answered = bench.figures["answered"]
    for outcome in ("COMMITTED", "ABORTED"):
        counted = scrape.total(after, "strife_payments_total", outcome=outcome) - \
            scrape.total(before, "strife_payments_total", outcome=outcome)
        assert counted == answered[outcome], (outcome, counted, answered)
    assert answered["COMMITTED"] > 0
    latency = scrape.buckets(after, "strife_payment_stage_seconds", stage="gateway")
    assert scrape.quantile(0.5, latency) is not None


def test_bench_bad_arguments(live):
    assert live.cli("bench", "--seconds", "0").returncode == 2
    assert live.cli("bench", "--concurrency", "0").returncode == 2


def test_bench_with_nothing_running_starts_and_removes_its_own_deployment_and_prints_its_report(tmp_path):
    # the bench pays between its own accounts, registered by the admin: no other client to start
    alone = "\n".join(line for line in SMALL_TOPOLOGY.splitlines() if not line.startswith(("  alice:", "  bob:")))
    assert "admin:" in alone and "alice" not in alone
    (tmp_path / "topology.yaml").write_text(textwrap.dedent(alone))
    # the text report (the shared deployment's run is --json): one run serves both, a bench costs seconds of both cores
    result = subprocess.run([*STRIFE, "bench", "--seconds", SHORTEST, "--concurrency", "2"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ratio (payments/s x 6 / echo/s)" in result.stdout and " ms | #" in result.stdout
    assert "CPU ms per payment: " in result.stdout and "CPU ms per echo: " in result.stdout
    assert re.search(r"tracing on/off \(trace_sample 1, both paced at [0-9.]+/s\): CPU ms per payment .* by round "
                     r"[-+0-9. %]+, median [-+0-9. %]+\)", result.stdout), result.stdout
    paid = re.search(r"^payments x2 .*\((\d+) ok, \d+ aborted, \d+ errors\)$", result.stdout, re.M)
    assert paid and int(paid.group(1)) > 0, result.stdout
    started_in = re.search(r"no deployment running in \S+: starting one in (\S+)", result.stderr).group(1)
    assert not os.path.exists(started_in) and not processes_of(started_in)  # nothing left behind
    assert not (tmp_path / "state").exists()  # the user's directory was not used


def test_windowed_percentiles_follow_the_ok_samples_over_time():
    from strife.checks.bench.load import Sample
    from strife.checks.bench.report import windowed_percentiles

    # first second: 10 ms answers; second second: 100 ms; one slow abort that must not count
    samples = [Sample(i / 100, 0.010, "ok") for i in range(100)] + \
              [Sample(1 + i / 100, 0.100, "ok") for i in range(100)] + [Sample(0.5, 5.0, "aborted")]
    trend = windowed_percentiles(samples, windows=2)
    assert len(trend) >= 2 and all(a[0] < b[0] for a, b in zip(trend, trend[1:]))  # in time order
    first, last = trend[0][1], trend[-1][1]
    assert first[50] == first[99] == 10.0 and last[50] == last[99] == 100.0
    assert windowed_percentiles([Sample(0, 1.0, "error")]) == []


def test_a_bench_killed_in_its_echo_phase_leaves_no_echo_server(live):
    """The echo server dies with the process that spawned it, even by SIGKILL (a bench stopped
    with kill -9, or its terminal closed): spawned here by a process that is then killed."""
    import signal
    import sys
    spawner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from strife.checks.bench import echo; "
         "server = echo.spawn(sys.argv[1]); print(server.stdout.readline().strip(), server.pid, flush=True); "
         "time.sleep(60)", str(live.home)], stdout=subprocess.PIPE, text=True)
    try:
        port, pid = spawner.stdout.readline().split()
        assert int(port) > 0 and psutil.pid_exists(int(pid))
    finally:
        spawner.send_signal(signal.SIGKILL)
        spawner.wait()
    wait_for(lambda: not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE,
             timeout=10, what="the echo server gone with its spawner")


def test_a_bench_whose_own_deployment_cannot_start_leaves_nothing_running(tmp_path):
    broken = SMALL_TOPOLOGY.replace("  bank1: {}", "  bank1: {failpoints: {start: crash}, restart: no}")
    assert "start: crash" in broken
    (tmp_path / "topology.yaml").write_text(textwrap.dedent(broken))
    result = subprocess.run([*STRIFE, "bench", "--seconds", SHORTEST], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "could not start a deployment to measure" in result.stderr, result.stderr
    assert "bank1 failed to start" in result.stderr
    started_in = re.search(r"no deployment running in \S+: starting one in (\S+)", result.stderr).group(1)
    left = processes_of(started_in)
    try:
        assert not left and not os.path.exists(started_in)  # its supervisor and etcd went too
    finally:
        for proc in left:
            proc.kill()
        shutil.rmtree(started_in, ignore_errors=True)
