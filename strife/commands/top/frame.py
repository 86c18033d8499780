"""One frame of the live view: every node as the supervisor sees it and as its metrics say,
payments per second with p50/p99, holds in doubt, armed failpoints and active faults. Rates are
differences from the frame before (the first frame has none)."""
from __future__ import annotations

import asyncio
import dataclasses
import time

from strife.launcher.control import ControlClient, NotRunning, Status
from strife.observe import scrape

LATENCY = ("strife_payment_stage_seconds", {"stage": "gateway"})


@dataclasses.dataclass
class NodeRow:
    name: str
    kind: str
    state: str
    health: str
    restarts: int
    uptime: float | None
    pid: int | None
    rss_mb: float | None
    cpu_percent: float | None
    failpoints: list[tuple[str, str]]
    metrics: str | None


@dataclasses.dataclass
class Frame:
    at: float
    nodes: list[NodeRow]
    payments_total: int
    payments_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    holds_prepared: int
    holds_in_doubt: int
    faults: list[str]           # everything out of the ordinary: node states, failpoints, network faults
    network_faults: list[str]   # those between hosts (`strife chaos --partition`, ...), as `strife status` names them

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Sampler:
    """Takes frames of one running deployment; keeps the last scrape for rates."""

    def __init__(self, topology):
        self.topology = topology
        self.control = ControlClient(topology.layout, timeout=5.0)
        self._last: tuple[float, dict] | None = None  # (monotonic, {node: samples})

    async def take(self) -> Frame:
        status = await asyncio.to_thread(self._status)
        specs = {n.name: n for n in self.topology.nodes}
        alive = [n for n in status.nodes if n.state in ("RUNNING", "STARTING") and n.name in specs]
        scraped = await asyncio.gather(*(asyncio.to_thread(scrape.scrape, self.topology.home, specs[n.name])
                                         for n in alive))
        samples = {n.name: s for n, s in zip(alive, scraped) if s is not None}
        armed = await self._failpoints(alive)
        now = time.monotonic()
        last = self._last[1] if self._last else {}
        elapsed = now - self._last[0] if self._last else None
        self._last = (now, {**last, **samples})  # a node that did not answer keeps its last figures
        rows = [self._row(n, samples.get(n.name), last.get(n.name), elapsed, armed.get(n.name, []))
                for n in status.nodes]
        gateways = [n.name for n in status.nodes if n.kind == "gateway"]
        banks = [n.name for n in status.nodes if n.kind == "bank"]
        paid = sum(scrape.total(samples.get(g) or last.get(g), "strife_payments_total") for g in gateways)
        paid_before = sum(scrape.total(last.get(g), "strife_payments_total") for g in gateways)
        now_buckets = _merged(scrape.buckets(samples.get(g), LATENCY[0], **LATENCY[1]) for g in gateways)
        old_buckets = _merged(scrape.buckets(last.get(g), LATENCY[0], **LATENCY[1]) for g in gateways)
        window = {b: c - old_buckets.get(b, 0.0) for b, c in now_buckets.items()} if last else now_buckets
        p50, p99 = scrape.quantile(0.5, window), scrape.quantile(0.99, window)
        faults = [f"{n.name} {n.state}" for n in status.nodes if n.state in ("PAUSED", "BACKOFF", "FATAL", "EXITED")]
        faults += [f"{name}: {step}={action}" for name, points in armed.items() for step, action in points]
        network = _network_faults(self.topology)
        return Frame(
            at=time.time(), nodes=rows, payments_total=int(paid),
            payments_per_s=round((paid - paid_before) / elapsed, 1) if elapsed and last else None,
            p50_ms=_ms(p50), p99_ms=_ms(p99),
            holds_prepared=int(sum(scrape.total(samples.get(b), "strife_holds_prepared") for b in banks)),
            holds_in_doubt=int(sum(scrape.total(samples.get(b), "strife_holds_in_doubt") for b in banks)),
            faults=faults + [f"network: {text}" for text in network], network_faults=network)

    def _status(self) -> Status:
        try:
            return self.control.status()
        except NotRunning:
            return Status("stopped", None, 0, str(self.topology.path), [])

    async def _failpoints(self, alive) -> dict[str, list[tuple[str, str]]]:
        from strife.launcher.chaos import AdminClient

        async def armed(name):
            try:
                async with AdminClient(self.topology, name) as admin:
                    return name, await asyncio.wait_for(admin.list(), 1.0)
            except Exception:  # noqa: BLE001 (a node that cannot answer now shows none)
                return name, []
        found = await asyncio.gather(*(armed(n.name) for n in alive if n.kind != "etcd"))
        return {name: points for name, points in found if points}

    @staticmethod
    def _row(node, samples, last, elapsed, armed) -> NodeRow:
        rss = scrape.total(samples, "process_resident_memory_bytes") if samples else None
        cpu = None
        if samples and last and elapsed:
            used = scrape.total(samples, "process_cpu_seconds_total") - scrape.total(last, "process_cpu_seconds_total")
            cpu = round(max(0.0, used) / elapsed * 100, 1)
        return NodeRow(node.name, node.kind, node.state, node.health.partition(": ")[0], node.restarts, node.uptime,
                       node.pid, round(rss / 2 ** 20, 1) if rss else None, cpu, armed, node.metrics)


def _network_faults(topology) -> list[str]:
    if not topology.hosts:
        return []
    from strife.launcher import faults
    return [faults.describe(f) for f in faults.load(topology.layout)]


def _merged(many) -> dict[float, float]:
    out: dict[float, float] = {}
    for one in many:
        for bound, count in one.items():
            out[bound] = out.get(bound, 0.0) + count
    return out


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def _or_dash(value, fmt="{}"):
    return "-" if value is None else fmt.format(value)


def uptime_text(seconds):
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 3600 \
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


COLUMNS = ("NAME", "KIND", "STATE", "HEALTH", "RESTARTS", "UPTIME", "RSS MB", "CPU %", "FAILPOINTS")


def cells(row: NodeRow) -> tuple[str, ...]:
    return (row.name, row.kind, row.state, row.health, str(row.restarts), uptime_text(row.uptime),
            _or_dash(row.rss_mb, "{:.1f}"), _or_dash(row.cpu_percent, "{:.1f}"),
            ", ".join(f"{s}={a}" for s, a in row.failpoints) or "-")


def summary(frame: Frame) -> str:
    return (f"payments {frame.payments_total}  {_or_dash(frame.payments_per_s, '{:.1f}')}/s  "
            f"p50 {_or_dash(frame.p50_ms, '{:.1f}')} ms  p99 {_or_dash(frame.p99_ms, '{:.1f}')} ms  "
            f"holds prepared {frame.holds_prepared}  in doubt {frame.holds_in_doubt}")


def text(frame: Frame) -> str:
    """The frame as plain text (`strife top --once`)."""
    rows = [COLUMNS, *(cells(r) for r in frame.nodes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [time.strftime("strife top  %H:%M:%S", time.localtime(frame.at)), summary(frame),
             "faults: " + ("; ".join(frame.faults) or "none"), ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
