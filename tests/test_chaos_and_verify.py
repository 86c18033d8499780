"""Chaos on request, the audit, and a short seeded torture run that must end with verify clean.
The `strife` commands run in this process (`Deployment.cli`), torture as a process of its own."""
import json
import sqlite3
import uuid

from strife.checks import audit
from strife.client.gateway_client import GatewayClient
from strife.core.outcomes import Outcome
from strife.deployment.topology import load_deployment

from tests.helpers import PAYMENT_TOPOLOGY, balances, ledger_rows, prepared_holds, settled, wait_for


def test_pause_shows_paused_and_for_resumes_by_itself(live):
    assert live.cli("chaos", "--pause", "bank2", "--for", "3s").returncode == 0
    assert live.node("bank2")["state"] == "PAUSED"
    wait_for(lambda: live.node("bank2")["state"] == "RUNNING", timeout=20, what="bank2 resumed by itself")
    assert live.cli("chaos", "--resume", "bank2").returncode == 1  # not paused any more: says so


def test_pause_at_prepare_aborts_within_the_timeout_and_releases_every_hold(live):
    before = settled(live.home)
    assert live.cli("chaos", "--pause", "bank2", "--at", "prepare").returncode == 0
    result = live.cli("client", "alice", "pay", "bob", "2.00", "--json", "--wait", "30")
    answer = json.loads(result.stdout)
    assert result.returncode == 1 and answer["reason"] == "bank_unavailable", answer
    txn = answer["txn_id"]
    # bank2 is frozen inside prepare with its hold written; alice's side is released by phase 2.
    # bank2's own abort may already have arrived on another call once the gateway's prepare call
    # gave up (its deadline is prepare_timeout): the hold is there, PREPARED or already ABORTED.
    wait_for(lambda: ledger_rows(live.home, "bank1", "SELECT state FROM holds WHERE txn_id = ?", (txn,))
             == [("ABORTED",)], what="alice's hold released")
    assert ledger_rows(live.home, "bank2", "SELECT state FROM holds WHERE txn_id = ?", (txn,)) in (
        [("PREPARED",)], [("ABORTED",)])
    assert live.cli("chaos", "--resume", "bank2").returncode == 0
    wait_for(lambda: ledger_rows(live.home, "bank2", "SELECT state FROM holds WHERE txn_id = ?", (txn,))
             == [("ABORTED",)], timeout=30, what="bank2's hold released after resume")
    assert balances(live.home) == before and prepared_holds(live.home) == 0


def test_chaos_refuses_unknown_nodes_steps_and_actions(live):
    for args, message in [(("--kill", "nosuch"), "no node named 'nosuch'"),
                          (("--failpoint", "bank1:nope=crash"), "'nope' is not a step of bank1"),
                          (("--failpoint", "bank1:prepare=explode"), "the action must be one of"),
                          (("--failpoint", "bank1"), "NODE:STEP=ACTION"),
                          (("--pause", "bank1", "--for", "soon"), "not a duration")]:
        result = live.cli("chaos", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_only_the_operator_may_set_failpoints(live):
    import asyncio

    import grpc

    from strife.deployment import tls
    from strife.deployment.topology import load_deployment
    from strife.rpc import admin_pb2, admin_pb2_grpc

    t = load_deployment(live.home)

    async def go():
        codes = []
        for identity in ("gateway", "admin"):  # another infrastructure role; a user
            async with grpc.aio.secure_channel(t.node("bank1").address,
                                               tls.channel_credentials(live.home, identity)) as ch:
                try:
                    await admin_pb2_grpc.NodeAdminStub(ch).SetFailpoint(admin_pb2.SetFailpointRequest(
                        failpoint=admin_pb2.Failpoint(step="prepare", action="crash")), timeout=5)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
        return codes
    # the gateway is refused by role; a user's certificate does not even pass the bank's handshake
    assert asyncio.run(go()) == [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE]


def test_verify_is_clean_after_payments(live):
    live.cli("client", "alice", "pay", "bob", "1.00")
    settled(live.home)  # verify is right in flight too, but this test counts a finished commit
    result = live.cli("verify", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], report["problems"]
    assert report["total_minor"] == report["deposits_minor"] == sum(balances(live.home).values())
    assert report["transactions"]["committed"] >= 1


def test_an_audit_of_a_live_system_skips_payments_made_while_it_reads(live, monkeypatch):
    """The audit reads the ledgers, then etcd, then the gateway's store: a payment made in between
    is in the store but not in what the audit read before, and is not a problem."""
    topology = load_deployment(live.home)
    read_decisions, paid = audit._decisions, []

    async def pay_read_pay(topology):
        async with GatewayClient(topology, "alice") as alice:
            paid.append(await alice.pay("carol", 1, str(uuid.uuid4())))  # same bank: after the ledger read
            records = await read_decisions(topology)
            paid.append(await alice.pay("bob", 1, str(uuid.uuid4())))    # cross-bank: after the etcd read
        return records
    monkeypatch.setattr(audit, "_decisions", pay_read_pay)
    report = audit.audit(topology)
    assert [Outcome.of_number(answer.outcome) for answer in paid] == [Outcome.COMMITTED] * 2
    assert report.ok, report.problems


SEED = 2757


def test_a_short_seeded_torture_run_ends_clean(deployment):
    d = deployment(PAYMENT_TOPOLOGY.replace("hold_timeout: 6s", "hold_timeout: 3s"))
    d.up()
    # seed 2757 plans, in 8 s, a crash failpoint at a bank, kills of a bank and of the gateway, a
    # gateway failpoint and an etcd restart: five kinds of fault
    result = d.run("torture", "--seconds", "8", "--seed", str(SEED), "--concurrency", "4", "--json", timeout=400)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], report["problems"]
    assert report["seed"] == SEED and len(report["schedule"]) >= 4
    assert report["payments"]["committed"] > 0 and report["payments"]["unknown"] == 0
    assert report["verify"]["ok"]
    # for every fault: how long until its node was healthy again, and a payment through it committed
    faults = report["recovery"]["faults"]
    assert [f["fault"] for f in faults] == [i["fault"] for i in report["injected"] if i["applied"]]
    kills = [f for f in faults if f["kind"] in ("kill", "restart-etcd")]
    assert kills and all(f["healthy_s"] is not None and 0 < f["healthy_s"] < 10 for f in kills), kills
    for name, figures in report["recovery"]["summary"].items():
        assert figures["count"] >= 1 and figures["healthy_max"] >= figures["healthy_p50"], (name, figures)
    assert 0 < report["recovery"]["longest_commit_gap_s"] < 8
    # the soak's figures: every node sampled at start and end, the disk, bytes kept per payment
    figures = report["resources"]
    assert figures["samples"] >= 3 and set(figures["nodes"]) == {n["name"] for n in d.status()["nodes"]}
    last = figures["series"][-1]["nodes"]  # (an 8 s run is too short to judge: nodes live 30 s first)
    assert all(last["bank1"][f] > 0 for f in ("rss_bytes", "open_files", "threads"))
    assert figures["disk"]["etcd_bytes"]["end"] > 0 and figures["disk"]["ledgers_bytes"]["bytes_per_payment"] > 0
    # the schedule is a function of the seed: the same seed plans the same faults
    from strife.checks.torture import schedule
    from strife.deployment.topology import load_deployment
    t = load_deployment(d.home)
    assert [f.describe() for f in schedule.plan(SEED, 8, t, "alice")] == report["schedule"]
    assert [f.describe() for f in schedule.plan(SEED + 1, 8, t, "alice")] != report["schedule"]


def test_verify_reads_more_decisions_than_one_grpc_message_holds_and_reports_a_broken_ledger(deployment):
    """A deployment keeps one decision key per payment it ever made; after a few benchmark runs
    they outgrow gRPC's 4 MB message, so the audit reads them page by page. Then (one deployment
    for both) a ledger edited behind the protocol's back is reported."""
    import asyncio

    from strife.core import decisions
    from strife.deployment import discovery, identities, topology
    from strife.deployment.layout import Layout
    d = deployment()
    d.up()
    t = topology.load(Layout(d.home).resolved, home=d.home)
    # ~600 bytes per key and value: 8,500 of them are ~5 MB, read in pages of decisions.PAGE keys
    # (~3 MB each). Long keys rather than many: etcd's CPU goes by the number of keys written.
    pad = "x" * 560
    wanted = {f"old-{i:05d}-{pad}": decisions.COMMIT if i % 3 else decisions.ABORT for i in range(8_500)}
    assert sum(len(decisions.key(txn)) + len(outcome) for txn, outcome in wanted.items()) > 5_000_000

    async def go():
        async with discovery.client(t, identities.OPERATOR) as etcd:
            items = [(txn, outcome, (), None) for txn, outcome in wanted.items()]
            batches = [items[i:i + 128] for i in range(0, len(items), 128)]  # etcd: 128 operations a transaction
            for i in range(0, len(batches), 8):  # eight at a time: etcd syncs them together
                await asyncio.gather(*(decisions.decide_many(etcd, b, timeout=30) for b in batches[i:i + 8]))
            return await decisions.read_all(etcd)
    assert asyncio.run(go()) == wanted
    result = d.cli("verify")
    assert result.returncode == 0, result.stdout + result.stderr

    # The same deployment, spoiled: verify reports a broken ledger.
    result = d.cli("client", "alice", "pay", "bob", "3.00", "--json")
    txn = json.loads(result.stdout)["txn_id"]
    assert d.cli("verify").returncode == 0
    db = sqlite3.connect(d.home / "state" / "bank2" / "ledger.db")
    with db:  # someone edits the ledger behind the protocol's back
        db.execute("UPDATE accounts SET balance_minor = balance_minor + 100 WHERE name = 'bob'")
        db.execute("UPDATE holds SET state = 'ABORTED' WHERE txn_id = ?", (txn,))
    db.close()
    result = d.cli("verify")
    assert result.returncode == 1
    assert "money not conserved" in result.stdout and "difference 1.00" in result.stdout
    assert f"txn {txn}: etcd records COMMIT but bank2 (credit) aborted it" in result.stdout
    assert "verify: FAILED (2 problems)" in result.stdout
