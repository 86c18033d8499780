"""Issue 16: a payment's trace across every node, the metrics of every node, and `strife top`.
One deployment for the module; the gateway-crash test runs last (it restarts the gateway). The
`strife` commands run in this process (`Deployment.cli`), but for the payment made while `top`'s
view runs here (a process of its own: the view's loop owns this process's output). What a bench
run's metrics count is in test_bench.py, beside the one bench run that serves every check."""
import json
import sqlite3
import urllib.request

import pytest

from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from strife.observe import scrape
from tests.helpers import PAYMENT_TOPOLOGY, client_node_is_sender, settled, wait_for, started


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    with started(tmp_path_factory, "observe", PAYMENT_TOPOLOGY) as d:
        yield d


def pay(d, *args):
    result = d.cli("client", "alice", "pay", *args, "--json")
    return json.loads(result.stdout), result


def trace_of(d, txn_id, found=True):
    """`strife trace TXN --json`; with found=False, {"steps": []} while no node has written a
    record of it yet (a node writes its records together, within timeline.FLUSH_EVERY)."""
    result = d.cli("trace", txn_id, "--json")
    if not found and result.returncode == 1 and "no record of" in result.stderr + result.stdout:
        return {"steps": []}
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def phase2_done(d, txn_id):
    """Whether the gateway has every bank's acknowledgement of the payment's phase 2 (its store)."""
    store = Layout(d.home).gateway_db(load_deployment(d.home).of_kind("gateway")[0].name)
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT phase2_done FROM payments WHERE txn_id = ?", (txn_id,)).fetchone()
    finally:
        db.close()
    return row is not None and row[0] == 1


def steps(trace, node=None, step=None):
    return [s for s in trace["steps"] if (node is None or s["node"] == node) and (step is None or s["step"] == step)]


def gateway_metrics(d):
    from strife.deployment.topology import load_deployment
    gateway = load_deployment(d.home).node("gateway")
    return scrape.scrape(d.home, gateway, timeout=5)


def test_every_node_serves_metrics_on_the_port_status_shows(observed):
    nodes = observed.status()["nodes"]
    assert all(n["metrics"] and n["metrics"].startswith("127.0.0.1:") for n in nodes), nodes
    for n in nodes:
        with urllib.request.urlopen(f"http://{n['metrics']}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        assert "process_resident_memory_bytes" in text and "process_open_fds" in text, n["name"]
        if n["kind"] == "bank":
            assert "strife_holds_in_doubt" in text and "strife_holds_prepared" in text
        if n["kind"] == "gateway":
            assert "strife_payments_total" in text or "# TYPE strife_payments counter" in text
    table = observed.cli("status").stdout
    assert "METRICS" in table and nodes[0]["metrics"] in table


def test_trace_of_a_committed_payment(observed):
    answer, result = pay(observed, "bob", "1.25")
    assert answer["outcome"] == "committed", result.stdout + result.stderr
    txn = answer["txn_id"]
    # every record lands within the nodes' flush interval, the gateway's phase-2 acks after the banks' commits
    trace = wait_for(lambda: (t := trace_of(observed, txn, found=False)) and len(steps(t, step="commit")) == 2
                     and len([s for s in steps(t, "gateway", "phase2") if s["acked"]]) == 2
                     and steps(t, "alice", "send") and t,
                     what="both banks' commits, the gateway's phase-2 acks and alice's send in the trace")
    assert trace["outcome"] == "COMMITTED" and trace["payer"] == "alice" and trace["amount_minor"] == 125
    assert [s["result"] for s in steps(trace, "alice", "send")] == ["committed"]
    assert steps(trace, "alice", "queued")
    assert {s["bank"]: s["vote"] for s in steps(trace, "gateway", "prepare")} == {"bank1": "YES", "bank2": "YES"}
    assert {s["node"] for s in steps(trace, step="hold")} == {"bank1", "bank2"}
    assert [s["decision"] for s in steps(trace, "gateway", "decision")] == ["COMMIT"]
    assert {s["bank"] for s in steps(trace, "gateway", "phase2") if s["acked"]} == {"bank1", "bank2"}
    offsets = [s["offset_ms"] for s in trace["steps"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    order = [s["step"] for s in trace["steps"] if s["node"] == "gateway"]
    assert order.index("received") < order.index("decision") < order.index("reply")
    text = observed.cli("trace", txn).stdout  # the waterfall
    assert "COMMITTED" in text and "prepare bank2" in text and "█" in text
    listed = json.loads(observed.cli("trace", "--last", "3", "--json").stdout)
    assert txn in [s["txn_id"] for s in listed]
    assert json.loads(observed.cli("trace", "--slowest", "1", "--json").stdout)


def test_trace_of_a_payment_aborted_by_a_bank_paused_at_prepare(observed):
    assert observed.cli("chaos", "--pause", "bank2", "--at", "prepare").returncode == 0
    try:
        answer, result = pay(observed, "bob", "2", "--wait", "20")
    finally:
        assert observed.cli("chaos", "--resume", "bank2").returncode == 0
    assert answer["outcome"] == "aborted", result.stdout
    txn = answer["txn_id"]
    trace = wait_for(lambda: (t := trace_of(observed, txn, found=False)) and steps(t, "bank2", "abort") and t,
                     what="bank2's abort in the trace")
    assert trace["outcome"] == "ABORTED" and trace["reason"] == "BANK_UNAVAILABLE"
    prepares = {s["bank"]: s for s in steps(trace, "gateway", "prepare")}
    assert prepares["bank2"]["vote"] == "NO" and prepares["bank2"]["reason"] == "BANK_UNAVAILABLE"
    assert prepares["bank2"]["ms"] >= 1000  # prepare_timeout 1500ms
    fired = [s for s in steps(trace, "bank2", "failpoint")]
    assert fired and fired[0]["point"] == "prepare" and fired[0]["action"] == "pause"
    assert [s["decision"] for s in steps(trace, "gateway", "decision")] == ["ABORT"]


def test_top_once_shows_every_node(observed):
    result = observed.cli("top", "--once")
    assert result.returncode == 0, result.stderr
    for n in observed.status()["nodes"]:
        assert n["name"] in result.stdout
    assert "payments" in result.stdout and "p99" in result.stdout
    frame = json.loads(observed.cli("top", "--once", "--json").stdout)
    assert frame["payments_total"] > 0 and {n["name"] for n in frame["nodes"]} >= {"bank1", "bank2", "gateway"}
    assert all(n["rss_mb"] for n in frame["nodes"] if n["state"] == "RUNNING")
    assert frame["network_faults"] == []  # no hosts here: test_hosts_cluster.py shows them


def test_top_keys_pause_and_resume_a_bank_while_payments_are_counted(observed):
    import asyncio
    asyncio.run(_drive_top(observed))


async def _drive_top(observed):
    import asyncio

    from strife.deployment.topology import load_deployment
    from strife.commands.top.app import TopApp
    from textual.widgets import DataTable

    app = TopApp(load_deployment(observed.home), refresh=0.5)

    async def until(predicate, what, timeout=60.0):
        async def poll():
            while not predicate():
                await pilot.pause(0.1)
        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def state_of(name):
        return next(r.state for r in app.frame.nodes if r.name == name) if app.frame else None

    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: app.frame is not None, "the first frame")
        table = app.query_one(DataTable)
        assert {str(k.value) for k in table.rows} == {n["name"] for n in observed.status()["nodes"]}
        table.move_cursor(row=[r.name for r in app.frame.nodes].index("bank2"))
        await pilot.press("p")
        try:
            await until(lambda: state_of("bank2") == "PAUSED", "bank2 PAUSED in the view")
            assert "PAUSED" in str(table.get_row("bank2"))
            counted = app.frame.payments_total
            same_bank = await asyncio.to_thread(observed.run, "client", "alice", "pay", "carol", "0.5")
            assert same_bank.returncode == 0, same_bank.stdout  # bank1 alone: unaffected by the pause
            await until(lambda: app.frame.payments_total > counted, "the payment counted in the view")
        finally:
            table.move_cursor(row=[r.name for r in app.frame.nodes].index("bank2"))
            await pilot.press("r")
            await until(lambda: state_of("bank2") == "RUNNING", "bank2 RUNNING again")


def test_a_retry_answered_from_the_store_has_its_own_reply_in_the_trace(observed):
    import asyncio
    import uuid

    from strife.client.gateway_client import GatewayClient
    from strife.deployment.topology import load_deployment
    txn = f"retry-{uuid.uuid4()}"

    async def pay_as_alice():
        async with GatewayClient(load_deployment(observed.home), "alice") as client:
            return await client.pay("bob", 75, txn)
    first = asyncio.run(pay_as_alice())
    wait_for(lambda: steps(trace_of(observed, txn, found=False), "gateway", "phase2-done"), what="the payment's phase 2 done")
    again = asyncio.run(pay_as_alice())
    assert again.outcome == first.outcome and again.txn_id == txn
    # a node writes its records together, within timeline.FLUSH_EVERY
    replies = wait_for(lambda: len(r := steps(trace_of(observed, txn), "gateway", "reply")) >= 2 and r,
                       what="the second reply in the trace")
    assert len(replies) == 2 and "source" not in replies[0], replies
    assert replies[1]["source"] == "store" and replies[1]["outcome"] == replies[0]["outcome"] == "COMMITTED"
    assert "again, from the store" in observed.cli("trace", txn).stdout


def test_the_operator_switches_tracing_off_and_on(observed):
    """SIGUSR1 and SIGUSR2, as `strife bench` does to measure what tracing costs: while off, the
    gateway and the banks write nothing of a payment; the client (not switched) still does."""
    import asyncio

    from strife.checks.bench import trace_cost
    from strife.deployment.topology import load_deployment
    topology = load_deployment(observed.home)
    switched = {n["name"]: n["pid"] for n in observed.status()["nodes"] if n["kind"] in ("gateway", "bank")}
    # alice's node must be the one that sends: it writes the client's records (a command does not)
    wait_for(lambda: client_node_is_sender(observed.home, "alice"), what="alice's client node to hold the sender lock")
    asyncio.run(trace_cost.switch(topology, switched, on=False))
    try:
        untraced, result = pay(observed, "bob", "0.10")
        assert untraced["outcome"] == "committed", result.stdout + result.stderr
        # phase 2 follows the answer: switched on before it ends, the gateway would record it
        wait_for(lambda: phase2_done(observed, untraced["txn_id"]), what="the untraced payment's phase 2")
    finally:
        asyncio.run(trace_cost.switch(topology, switched, on=True))
    traced, _ = pay(observed, "bob", "0.20")
    # a node writes its records together, within timeline.FLUSH_EVERY: wait for the traced payment's
    wait_for(lambda: {"gateway", "bank1", "bank2"} <= {s["node"] for s in trace_of(observed, traced["txn_id"],
                                                                                     found=False)["steps"]},
             what="the traced payment's records from the gateway and both banks")
    # alice's node writes its own records within FLUSH_EVERY too, late on a loaded machine: waited for
    untraced_steps = wait_for(lambda: trace_of(observed, untraced["txn_id"], found=False)["steps"],
                              what="alice's records of the untraced payment")
    assert {s["node"] for s in untraced_steps} == {"alice"}
    marks = [json.loads(line) for line in Layout(observed.home).trace("gateway").read_text().splitlines()
             if '"step":"tracing"' in line]
    assert [m["on"] for m in marks][-2:] == [False, True]
    assert scrape.total(gateway_metrics(observed), "strife_tracing") == 1


def test_trace_of_a_payment_finished_after_a_gateway_crash(observed):
    assert observed.cli("chaos", "--failpoint", "gateway:after-decision=crash").returncode == 0
    answer, result = pay(observed, "bob", "3", "--wait", "1")
    txn = answer["txn_id"]
    assert answer["outcome"] in ("queued", "committed"), result.stdout

    def finished():
        t = trace_of(observed, txn, found=False)
        return t if t.get("finished_by") and len(steps(t, step="commit")) == 2 else None
    trace = wait_for(finished, timeout=90, what="the payment finished after the crash")
    assert trace["outcome"] == "COMMITTED"
    crash = [s for s in steps(trace, "gateway", "failpoint") if s["action"] == "crash"]
    assert crash and crash[0]["point"] == "after-decision"
    assert any(r["node"] == "gateway" and r["gap_ms"] > 0 for r in trace["restarts"])
    assert steps(trace, "gateway", "started")
    text = observed.cli("trace", txn).stdout
    assert "gateway restarted" in text and "finished by" in text
    settled(observed.home)


def test_trace_refuses_bad_input(observed, tmp_path):
    assert observed.cli("trace").returncode == 2
    assert observed.cli("trace", "x", "--last").returncode == 2
    assert observed.cli("trace", "--last", "0").returncode == 2
    assert observed.cli("trace", "--last", "2", "--plot", str(tmp_path / "a.png")).returncode == 2
    missing = observed.cli("trace", "no-such-txn")
    assert missing.returncode == 1 and "no record" in missing.stdout
