"""What a long torture costs each node and the disk, sampled as it runs (the soak of `strife torture`).

Every few seconds: each node's resident memory, open descriptors and threads (by the pid the
supervisor reports, so a restarted node is followed into its new process), and the bytes on disk of
the logs, etcd's data and the ledgers and gateway records. A figure is flat when, after the warm-up,
the median of the last tenth of its samples is within 10 % of the median of the first tenth (counts
of descriptors and threads get two units of slack: 9 -> 11 threads is noise, not growth). A node's
samples count once its process is SETTLED_AGE old: a node killed by the torture comes back as a new
process that has yet to load what it keeps, and that climb is a restart, not a leak.

Ledgers and gateway records keep every payment on purpose (the banks' books, the answers the
gateway gave); they grow with the payments made, so they are reported per payment, not judged flat.
Logs grow until rotation caps them (settings.log_max_bytes x (log_keep + 1) per node): they are
judged against that cap.
"""
import asyncio
import dataclasses
import statistics
import time
from pathlib import Path

import psutil

EVERY = 5.0                 # seconds between two samples
WARM_UP = 0.2               # the share of the run ignored before judging flatness
TOLERANCE = 0.10            # growth allowed from the start to the end of the judged stretch
COUNT_SLACK = 2             # descriptors and threads: units of slack on top of the tolerance
SETTLED_AGE = 30.0          # seconds a node's process runs before its figures are judged
PER_NODE = ("rss_bytes", "open_files", "threads")
KEPT_ON_PURPOSE = ("ledgers_bytes", "gateway_records_bytes")
BOUNDED = ("etcd_bytes",)
ROTATED = "logs_bytes"


@dataclasses.dataclass
class Sample:
    at: float                      # seconds since sampling began
    nodes: dict[str, dict[str, int]]
    disk: dict[str, int]


def _process_figures(pid):
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return {"rss_bytes": proc.memory_info().rss, "open_files": proc.num_fds(), "threads": proc.num_threads()}
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None  # between a kill and its restart


def _bytes_under(paths):
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total


def disk_usage(layout, topology):
    """Bytes on disk of what a deployment writes as it runs (a database with its -wal and -shm)."""
    def with_wal(db: Path):
        return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return {
        "ledgers_bytes": _bytes_under([p for b in topology.of_kind("bank") for p in with_wal(layout.ledger(b.name))]),
        "gateway_records_bytes": _bytes_under(
            [p for g in topology.of_kind("gateway") for p in with_wal(layout.gateway_db(g.name))]),
        "logs_bytes": _bytes_under([layout.logs]),
        "etcd_bytes": _bytes_under([layout.data(e.name) for e in topology.of_kind("etcd")]),
    }


class Sampler:
    """Samples until stopped; `report(payments)` judges what it saw."""

    def __init__(self, status, layout, topology, every=EVERY, clock=time.monotonic):
        self.status, self.layout, self.topology = status, layout, topology
        self.every, self.clock = every, clock
        self.samples: list[Sample] = []

    async def sample(self, began):
        status = await self.status()
        nodes = {}
        for node in status.nodes:
            if node.pid:
                figures = await asyncio.to_thread(_process_figures, node.pid)
                if figures:  # how long it has been this node (a warm spare is older than that)
                    nodes[node.name] = {**figures, "age_s": node.uptime or 0.0}
        disk = await asyncio.to_thread(disk_usage, self.layout, self.topology)
        self.samples.append(Sample(round(self.clock() - began, 1), nodes, disk))

    async def run(self, stop: asyncio.Event):
        began = self.clock()
        while True:
            await self.sample(began)
            try:
                await asyncio.wait_for(stop.wait(), self.every)
                break
            except asyncio.TimeoutError:
                pass
        await self.sample(began)  # the end, always

    def report(self, payments):
        settings = self.topology.settings
        nodes = len(self.topology.nodes) + 1  # and the supervisor's own log
        return summarize(self.samples, payments, logs_cap=nodes * settings.log_max_bytes * (settings.log_keep + 1))


def _judge(series, slack):
    """{start, end, growth, flat} over the stretch after the warm-up; None without enough samples."""
    judged = series[int(len(series) * WARM_UP):]
    if len(judged) < 2:
        return None
    tenth = max(1, len(judged) // 10)
    start, end = statistics.median(judged[:tenth]), statistics.median(judged[-tenth:])
    growth = (end - start) / start if start else 0.0
    return {"start": round(start), "end": round(end), "growth": round(growth, 3),
            "flat": end <= start * (1 + TOLERANCE) + slack}


def summarize(samples, payments, logs_cap=None):
    """Per node and per disk figure: first and last sample, and flatness after the warm-up."""
    if not samples:
        return {"samples": 0}
    nodes = {}
    for name in sorted({n for s in samples for n in s.nodes}):
        nodes[name] = {}
        for figure in PER_NODE:
            series = [s.nodes[name][figure] for s in samples
                      if name in s.nodes and s.nodes[name].get("age_s", SETTLED_AGE) >= SETTLED_AGE]
            nodes[name][figure] = _judge(series, 0 if figure == "rss_bytes" else COUNT_SLACK)
    disk = {}
    for figure in BOUNDED:
        disk[figure] = _judge([s.disk[figure] for s in samples], 0)
    logs = [s.disk[ROTATED] for s in samples]
    disk[ROTATED] = {"start": logs[0], "end": logs[-1], "cap": logs_cap,
                     "flat": logs_cap is None or max(logs) <= logs_cap}
    for figure in KEPT_ON_PURPOSE:
        first, last = samples[0].disk[figure], samples[-1].disk[figure]
        disk[figure] = {"start": first, "end": last,
                        "bytes_per_payment": round((last - first) / payments, 1) if payments else None}
    judged = [f for per_node in nodes.values() for f in per_node.values() if f] + \
             [disk[f] for f in (*BOUNDED, ROTATED) if disk[f]]
    growing = sorted([f"{name}.{figure}" for name, per in nodes.items() for figure, f in per.items()
                      if f and not f["flat"]] + [figure for figure in (*BOUNDED, ROTATED)
                                                 if disk[figure] and not disk[figure]["flat"]])
    return {"samples": len(samples), "seconds": samples[-1].at, "flat": bool(judged) and not growing, "growing": growing,
            "nodes": nodes, "disk": disk,
            "series": [dataclasses.asdict(s) for s in samples]}
