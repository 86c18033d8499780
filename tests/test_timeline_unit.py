"""The timeline writer and the topology's trace_sample, without a deployment."""
import json
import types

from strife.deployment import topology as topology_model
from strife.observe import scrape, timeline


def settings(**kw):
    return types.SimpleNamespace(**{"log_max_bytes": 4096, "log_keep": 2, "trace_sample": 1.0, **kw})


def test_records_rotate_by_size_and_keep_log_keep_files(tmp_path):
    path = tmp_path / "n.trace.jsonl"
    timeline.configure(path, "n", settings())
    for i in range(300):
        timeline.record(f"txn-{i}", "step", None, None, i=i)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["n.trace.jsonl", "n.trace.jsonl.1", "n.trace.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["txn"] == "txn-299" and last["node"] == "n" and last["i"] == 299
    assert (path.stat().st_mode & 0o777) == 0o600


def test_sampling_keeps_a_payment_on_every_node_or_none(tmp_path):
    timeline.configure(tmp_path / "a.jsonl", "a", settings(trace_sample=0.5))
    kept = {f"t{i}" for i in range(1000) if timeline.traced(f"t{i}")}
    assert 350 < len(kept) < 650
    timeline.configure(tmp_path / "b.jsonl", "b", settings(trace_sample=0.5))
    assert kept == {f"t{i}" for i in range(1000) if timeline.traced(f"t{i}")}  # the same choice elsewhere
    timeline.configure(tmp_path / "c.jsonl", "c", settings(trace_sample=0))
    timeline.record("t1", "x")
    assert not (tmp_path / "c.jsonl").exists()


def test_trace_sample_is_validated(tmp_path):
    doc = {"banks": {"bank1": {}}, "gateway": {}, "clients": {"a": {"bank": "bank1"}},
           "settings": {"trace_sample": 2}}
    try:
        topology_model.parse(doc, tmp_path / "t.yaml")
        raise AssertionError("accepted trace_sample 2")
    except topology_model.TopologyError as exc:
        assert exc.problems == ["settings.trace_sample: 2 is not a number from 0 to 1"]
    doc["settings"]["trace_sample"] = 0.25
    assert topology_model.parse(doc, tmp_path / "t.yaml").settings.trace_sample == 0.25


def test_quantile_interpolates_like_prometheus():
    cumulative = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert abs(scrape.quantile(0.5, cumulative) - 0.1) < 1e-9
    assert abs(scrape.quantile(0.75, cumulative) - 0.15) < 1e-9
    assert scrape.quantile(0.5, {}) is None


def test_records_wait_to_be_written_together_and_node_events_go_at_once(tmp_path, monkeypatch):
    """One write(2) for the records of FLUSH_EVERY seconds (each write releases the GIL to gRPC's
    threads), at once for a burst of FLUSH_LINES or a node's own event (it may be a crash)."""
    import asyncio
    import os
    path = tmp_path / "n.trace.jsonl"
    timeline.configure(path, "n", settings(log_max_bytes=1 << 20))
    writes = []
    real_write = os.write
    monkeypatch.setattr(timeline.os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))

    def lines():
        return [json.loads(line)["step"] for line in path.read_text().splitlines()]

    async def turns():
        timeline.record("t1", "a")
        await asyncio.sleep(0)
        timeline.record("t1", "b")
        await asyncio.sleep(0)
        assert lines() == []  # several turns of the loop: still waiting
        await asyncio.sleep(timeline.FLUSH_EVERY * 1.5)
        assert lines() == ["a", "b"] and len(writes) == 1
        timeline.record("t2", "c")
        timeline.node_event("failpoint", point="prepare", action="crash")  # may end the process: at once
        assert lines() == ["a", "b", "c", "failpoint"] and len(writes) == 2
        timeline.switch(False)
        timeline.record("t3", "untraced")
        timeline.switch(True)
        assert lines() == ["a", "b", "c", "failpoint", "tracing", "tracing"]
        for i in range(timeline.FLUSH_LINES):
            timeline.record("burst", str(i))
        assert len(lines()) == 6 + timeline.FLUSH_LINES  # a burst does not wait
        await asyncio.sleep(timeline.FLUSH_EVERY * 1.5)  # its timer finds nothing left
    asyncio.run(turns())
    assert len(writes) == 5, [len(w) for w in writes]  # two-line batch, node event, 2 switches, burst


def test_a_record_is_one_json_line_whatever_its_fields_hold(tmp_path):
    path = tmp_path / "n.trace.jsonl"
    timeline.configure(path, "n", settings(log_max_bytes=1 << 20))
    odd = 'bank "1"\u2028\n\\ é'
    timeline.record("t\u2028x", "prepare", 100.25, 100.5, bank=odd, attempt=2, ok=True, gone=None, ms_left=1.5,
                    banks=["a", odd], vote={"vote": "NO"})
    timeline.record(None, "started", pid=7)
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[2] == b"" and all(line.isascii() for line in lines)
    first, second = (json.loads(line) for line in lines[:2])
    assert first == {"t": 100.25, "ms": 250.0, "node": "n", "txn": "t\u2028x", "step": "prepare", "bank": odd,
                     "attempt": 2, "ok": True, "gone": None, "ms_left": 1.5, "banks": ["a", odd],
                     "vote": {"vote": "NO"}}
    assert second["txn"] is None and second["pid"] == 7 and second["step"] == "started"
