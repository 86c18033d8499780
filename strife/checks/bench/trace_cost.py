"""What tracing costs: the same payments against the same deployment with every gateway's and
bank's timeline on, off, off and on again, in rounds of about ROUND seconds (a load that comes and
goes during the run weighs on both sides alike, and each side starts its callers as often), and
the CPU per payment of each side.

Both sides are paced at the same rate, PACE of what the many-caller phase reached: CPU per payment
is compared for the same work per second. At full speed it is not: whatever slows one side a
little (a timer, a compaction in etcd) shrinks the batches the gateway and banks make, and the
CPU of every payment rises with it (a bench on an idle machine found tracing -2 %, +12 % and +19 %
that way, three runs in a row; the samples of a profile put tracing's own part at about 4 % of the
gateway's CPU).

The switch is the operator's: SIGUSR1 (off) and SIGUSR2 (on) to the node processes, each node's
`strife_tracing` gauge confirming it (strife/observe/node_hooks.py). Tracing is always on again
at the end, whatever happened.
"""
from __future__ import annotations

import asyncio
import collections
import os
import signal
import statistics
import time

import psutil

from strife.checks.bench.cpu import CpuMeter, per_item_ms
from strife.checks.bench.report import summarize
from strife.observe import scrape

SWITCH_TIMEOUT = 15.0  # seconds for every node to confirm a switch
ROUND = 10.0           # seconds of one round: on, off, off, on
MIN_ROUNDS = 3         # (from --seconds 5) the median of the rounds' differences: a burst of other work moves one
PACE = 0.7             # of the many-caller phase's payments/s: both sides keep up with it


class SwitchFailed(ValueError):
    """A node did not confirm the switch (the bench stops with this message)."""


def _is_node_of(pid, home) -> bool:
    """Whether `pid` is a Strife node of this deployment on this machine (never signal a stranger:
    with hosts on other machines the status's pids are theirs)."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return any(part.startswith("strife.nodes.") for part in cmdline) and str(home) in cmdline


async def switch(topology, pids, on, timeout=SWITCH_TIMEOUT):
    """Every node in `pids` (name -> pid) tracing (`on`) or not, once their metrics say so."""
    for name, pid in pids.items():
        os.kill(pid, signal.SIGUSR2 if on else signal.SIGUSR1)
    wanted, pending = (1.0 if on else 0.0), set(pids)
    deadline = time.monotonic() + timeout
    while pending:
        for name in sorted(pending):
            samples = await asyncio.to_thread(scrape.scrape, topology.home, topology.node(name), 2.0)
            if samples is not None and scrape.total(samples, "strife_tracing") == wanted:
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise SwitchFailed(f"tracing could not be switched {'on' if on else 'off'} in {', '.join(sorted(pending))} "
                               f"(its strife_tracing gauge did not change)")
        if pending:
            await asyncio.sleep(0.05)


async def measure(topology, pay, pids, nodes, seconds, concurrency, full_rate=None):
    """`pay(seconds, label, started, rate)` runs payments paced at `rate` per second and returns
    their samples, calling `started()` once its callers have logged in, as the clock starts; `pids`
    (name -> pid) are the processes metered from then on, `nodes` the ones switched; `full_rate`
    what the callers reached unpaced. {"on": ..., "off": ...} with each side's payments and CPU ms
    per payment by process, and the differences in % (None: tracing is off in this deployment,
    trace_sample 0)."""
    sample = topology.settings.trace_sample
    if sample <= 0:
        return None
    switched = {n: pids[n] for n in nodes if n in pids and _is_node_of(pids[n], topology.home)}
    used = {True: collections.Counter(), False: collections.Counter()}
    samples = {True: [], False: []}
    elapsed = {True: 0.0, False: 0.0}
    quarter = min(ROUND / 4, max(0.5, seconds / 4))
    rounds = max(round(seconds / ROUND), MIN_ROUNDS if seconds >= ROUND / 2 else 1)  # a short bench: one round
    rate = full_rate * PACE if full_rate else None
    by_round = []  # each round's difference, of the switched nodes' CPU per payment
    try:
        for _ in range(rounds):
            this = {True: [collections.Counter(), 0], False: [collections.Counter(), 0]}
            for on in (True, False, False, True):
                await switch(topology, switched, on)
                began: list = []  # (meter, time) once the callers are logged in: logins are not payments
                paid = await pay(quarter, f"tracing {'on' if on else 'off'}, {concurrency} callers",
                                 lambda: began.append((CpuMeter(pids), time.perf_counter())), rate)
                meter, start = began[0]
                spent = meter.used()
                samples[on] += paid
                used[on].update(spent)
                elapsed[on] += time.perf_counter() - start
                this[on][0].update(spent)
                this[on][1] += len(paid)
            by_round.append(_pct(*(sum(this[on][0][n] for n in switched) / max(this[on][1], 1)
                                   for on in (True, False))))
    finally:
        await switch(topology, switched, True)
    sides = {("on" if on else "off"): {"payments": summarize(samples[on], elapsed[on]),
                                       "cpu_ms_per_payment": per_item_ms(dict(used[on]), len(samples[on]))}
             for on in (True, False)}
    on_cpu, off_cpu = sides["on"]["cpu_ms_per_payment"], sides["off"]["cpu_ms_per_payment"]
    nodes_on = on_cpu["total"] - on_cpu.get("load generator", 0.0)
    nodes_off = off_cpu["total"] - off_cpu.get("load generator", 0.0)
    return {
        "trace_sample": sample, "switched": sorted(switched), "paced_per_s": round(rate, 1) if rate else None,
        **sides,
        # of all the CPU a payment costs (the load generator's included), and of the deployment's alone
        "difference_pct": _pct(on_cpu["total"], off_cpu["total"]),
        "deployment_difference_pct": _pct(nodes_on, nodes_off),
        # of the switched nodes' own (the processes that trace): the figure a loaded machine blurs least
        "switched_difference_pct": _pct(sum(on_cpu.get(n, 0.0) for n in switched),
                                        sum(off_cpu.get(n, 0.0) for n in switched)),
        # the same, round by round, and their median: what a burst of other work in one round cannot move
        "rounds_difference_pct": by_round,
        "median_difference_pct": _median(by_round),
        "by_process_ms": {name: round(on_cpu.get(name, 0.0) - off_cpu.get(name, 0.0), 3) for name in on_cpu},
    }


def _median(values):
    known = sorted(v for v in values if v is not None)
    return statistics.median(known) if known else None


def _pct(on, off):
    return round((on - off) / off * 100, 1) if off > 0 else None
