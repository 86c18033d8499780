"""The soak's judgement of resources, from made-up samples; and one real sample of a real process."""
import asyncio
import os
from types import SimpleNamespace

from strife.checks.torture import resources
from strife.checks.torture.resources import Sample


def samples(rss, fds=None, etcd=None, ledgers=None):
    n = len(rss)
    fds = fds or [20] * n
    etcd = etcd or [1_000_000] * n
    ledgers = ledgers or [0] * n
    return [Sample(at=5.0 * i, nodes={"bank1": {"rss_bytes": rss[i], "open_files": fds[i], "threads": 9}},
                   disk={"logs_bytes": 5000, "etcd_bytes": etcd[i], "ledgers_bytes": ledgers[i],
                         "gateway_records_bytes": 0}) for i in range(n)]


def test_memory_that_settles_after_the_warm_up_is_flat():
    rss = [10, 40, 60, 70] + [100] * 46 + [105] * 50   # warm-up, then 5 % drift
    report = resources.summarize(samples(rss), payments=1000)
    assert report["flat"] and report["growing"] == []
    assert report["nodes"]["bank1"]["rss_bytes"]["growth"] == 0.05


def test_memory_that_keeps_growing_is_named():
    rss = [100 + 2 * i for i in range(100)]             # a leak: +2 per sample, +~140 % over the run
    report = resources.summarize(samples(rss), payments=1000)
    assert not report["flat"] and report["growing"] == ["bank1.rss_bytes"]


def test_descriptors_get_two_units_of_slack_but_not_more():
    assert resources.summarize(samples([100] * 50, fds=[20] * 25 + [24] * 25), 10)["flat"]
    leaking = resources.summarize(samples([100] * 50, fds=[20] * 25 + [25] * 25), 10)
    assert leaking["growing"] == ["bank1.open_files"]


def test_a_restarted_node_is_judged_once_it_has_run_a_while():
    young = samples([50, 60, 70, 80] * 25)  # every sample of a process that keeps being killed
    for i, s in enumerate(young):
        s.nodes["bank1"]["age_s"] = 5.0 * (i % 4)
    assert resources.summarize(young, 10)["nodes"]["bank1"]["rss_bytes"] is None  # nothing to judge
    climbing = samples([10] * 10 + [50 + 10 * i for i in range(8)] + [130] * 82)
    for i, s in enumerate(climbing):  # killed at sample 10: its new process climbs for 40 s, then holds
        s.nodes["bank1"]["age_s"] = 5.0 * i if i < 10 else 5.0 * (i - 10)
    assert resources.summarize(climbing, 10)["flat"]


def test_logs_are_judged_against_their_rotation_cap():
    grown = samples([100] * 50)
    for i, s in enumerate(grown):
        s.disk["logs_bytes"] = 1000 * i
    assert resources.summarize(grown, 10, logs_cap=60_000)["flat"]
    assert resources.summarize(grown, 10, logs_cap=40_000)["growing"] == ["logs_bytes"]


def test_etcd_is_judged_and_ledgers_are_reported_per_payment():
    grown = resources.summarize(samples([100] * 50, etcd=[1_000_000 + 50_000 * i for i in range(50)]), 10)
    assert grown["growing"] == ["etcd_bytes"]
    kept = resources.summarize(samples([100] * 50, ledgers=[1000 + 300 * i for i in range(50)]), 49)
    assert kept["flat"] and kept["disk"]["ledgers_bytes"]["bytes_per_payment"] == 300.0


def test_a_sample_reads_a_live_process_and_the_disk(tmp_path):
    from strife.deployment.layout import Layout
    layout = Layout(tmp_path)
    layout.create()
    layout.ledger("bank1").parent.mkdir()
    layout.ledger("bank1").write_bytes(b"x" * 4096)
    layout.log("bank1").write_bytes(b"y" * 100)
    topology = SimpleNamespace(of_kind=lambda kind: [SimpleNamespace(name="bank1")] if kind == "bank" else [])

    async def status():
        return SimpleNamespace(nodes=[SimpleNamespace(name="bank1", pid=os.getpid(), uptime=100.0),
                                      SimpleNamespace(name="gone", pid=2**22 + 1, uptime=1.0)])

    sampler = resources.Sampler(status, layout, topology)
    asyncio.run(sampler.sample(0.0))
    [sample] = sampler.samples
    assert set(sample.nodes) == {"bank1"}            # a pid that is gone is skipped, not an error
    assert sample.nodes["bank1"]["rss_bytes"] > 1_000_000 and sample.nodes["bank1"]["threads"] >= 1
    assert sample.disk["ledgers_bytes"] == 4096 and sample.disk["logs_bytes"] >= 100


def test_the_text_report_names_what_grew_and_what_each_payment_keeps(capsys):
    from strife.commands.torture import _print_resources
    rss = [100 + 2 * i for i in range(100)]
    _print_resources(resources.summarize(samples(rss, ledgers=[500 * i for i in range(100)]), payments=99))
    line = capsys.readouterr().out
    assert "(100 samples): GROWING: bank1.rss_bytes" in line and "ledgers 500.0 B" in line


def test_payments_left_without_an_answer_are_asked_again_in_parallel_until_the_time_is_up(monkeypatch):
    """A soak under faults leaves thousands of payments without an answer: asking one at a time
    (each up to 5 s) would outlast any deadline."""
    from strife.checks.torture import run

    class Workload:
        def __init__(self, answers):
            self.sent = [SimpleNamespace(outcome="unknown", asked=0) for _ in range(40)]
            self.answers, self.flying, self.most = answers, 0, 0

        def unknown(self):
            return [s for s in self.sent if s.outcome == "unknown"]

        async def settle(self, sent, timeout):
            self.flying += 1
            self.most = max(self.most, self.flying)
            await asyncio.sleep(0.01)
            self.flying -= 1
            sent.asked += 1
            if self.answers:
                sent.outcome = "committed"

    torture = object.__new__(run.Torture)
    torture.concurrency = 8
    answering = Workload(answers=True)
    asyncio.run(torture._settle_unknown(answering))
    assert answering.unknown() == [] and answering.most == 8 and all(s.asked == 1 for s in answering.sent)
    monkeypatch.setattr(run, "SETTLE_FOR", 0.3)
    silent = Workload(answers=False)
    asyncio.run(torture._settle_unknown(silent))  # returns at the deadline though none is answered
    assert len(silent.unknown()) == 40 and all(s.asked >= 1 for s in silent.sent)


def test_a_worker_asks_again_for_the_same_payment_until_it_has_an_answer():
    """While the gateway is away a worker retries its payment (same id) instead of starting a new
    one every 50 ms: after an outage the torture should not be left with thousands unanswered."""
    import grpc

    from strife.checks.torture.workload import Workload
    from strife.core.outcomes import Outcome

    class Away(grpc.aio.AioRpcError):
        def __init__(self):
            super().__init__(grpc.StatusCode.UNAVAILABLE, None, None)

    class Client:
        def __init__(self):
            self.asked = []

        async def pay(self, payee, amount, txn_id, timeout):
            self.asked.append(txn_id)
            if len(self.asked) <= 3:
                raise Away()
            if len(self.asked) >= 6:
                stop.set()
            return SimpleNamespace(outcome=Outcome.COMMITTED.number)

    async def scenario():
        global stop
        stop = asyncio.Event()
        workload = Workload(topology=None, users=["alice", "bob"], seed=1, nonce="n", concurrency=1)
        workload.clients = {"alice": Client(), "bob": Client()}
        await workload._worker(0, stop)
        return workload

    workload = asyncio.run(scenario())
    first = workload.sent[0]
    asked = workload.clients[first.payer].asked
    assert asked[:4] == [first.txn_id] * 4           # three refusals, then the same id answered
    assert first.outcome == "committed" and workload.unknown() == []
