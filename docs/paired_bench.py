"""Two running deployments of two codes, compared in turns: a developer's A/B of CPU per payment.

Not part of Strife. The machine's speed drifts within minutes (docs/performance.md), more than most
changes move the figures, so two codes are compared on the same minutes: 32-caller closed loops
against deployment A, then B, then B, then A, ... in 2 s slices, CPU charged to the deployment
whose slice it was (its processes, and this load generator's own); or one caller's latency in 1 s
turns. Usage, with the older code
checked out in a worktree with its own venv (its nodes then run its code):

    git worktree add /tmp/before REV && python3 -m venv /tmp/before/.venv \
        && /tmp/before/.venv/bin/pip install -e /tmp/before
    mkdir A B && cp topology.yaml A/ && cp topology.yaml B/
    (cd A && /tmp/before/.venv/bin/strife up -d) && (cd B && strife up -d)
    python docs/paired_bench.py A B 40        # seconds per side; one JSON line per deployment
    python docs/paired_bench.py A B 20 1 cross-bank   # one caller (1 s turns), cross-bank payments only
    (cd A && /tmp/before/.venv/bin/strife down) && (cd B && strife down)
"""
import asyncio
import collections
import contextlib
import json
import sys
from pathlib import Path

import statistics

import psutil

from strife.checks.bench.load import closed_loop
from strife.checks.bench.run import Bench
from strife.commands.bench import load_deployment



async def _deployment(home, seconds, callers):
    bench = Bench(load_deployment(Path(home)), seconds, callers, lambda text: None)
    users = await bench._accounts()
    bench.banks = await bench._banks_of(users)
    pids, _ = await bench._deployment_pids()
    return bench, users, {name: psutil.Process(pid) for name, pid in pids.items()}


def _cpu(processes):
    seconds = {}
    for name, process in processes.items():
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[name] = times.user + times.system
    return seconds


async def main(homes, seconds, callers=32, kind=None):
    turn_seconds = 2.0 if callers > 1 else 1.0
    sides = [await _deployment(home, seconds, callers) for home in homes]
    used = [collections.Counter() for _ in sides]
    latencies = [[] for _ in sides]
    async with contextlib.AsyncExitStack() as stack:
        pays = [await stack.enter_async_context(bench._payer(users, callers, kind)) for bench, users, _ in sides]
        for pay in pays:
            await closed_loop(pay, callers, 1.0)  # warm-up
        for turn in range(int(seconds / turn_seconds)):
            for i in (0, 1) if turn % 2 == 0 else (1, 0):
                processes = dict(sides[i][2], **{"load generator": psutil.Process()})
                before = _cpu(processes)
                samples = await closed_loop(pays[i], callers, turn_seconds)
                after = _cpu(processes)
                used[i].update({name: after[name] - before[name] for name in after if name in before})
                latencies[i] += sorted(s.latency for s in samples)
    for home, spent, taken in zip(homes, used, latencies):
        taken.sort()
        print(json.dumps({"home": home, "payments_per_s": round(len(taken) / seconds, 1),
                          "p50_ms": round(1000 * statistics.median(taken), 2),
                          "p99_ms": round(1000 * taken[int(0.99 * len(taken))], 1),
                          "cpu_ms_per_payment": round(sum(spent.values()) * 1000 / len(taken), 3),
                          "by_process": {k: round(v * 1000 / len(taken), 3) for k, v in spent.most_common()}}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:3], float(sys.argv[3]), *([int(sys.argv[4])] if len(sys.argv) > 4 else []),
                     *(sys.argv[5:6])))
