"""Loads measured beside each other: short slices of each in turn, so that all of them see the same
machine. A shared machine's speed drifts by 20 % within minutes (docs/performance.md); an echo
measured once and the payments a minute later compare two machines, slices taken in turn do not."""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Awaitable, Callable

from strife.checks.bench.cpu import CpuMeter, per_item_ms
from strife.checks.bench.load import Sample, closed_loop


@dataclasses.dataclass
class Side:
    """One load: `call(worker, n)` from `concurrency` closed-loop callers; with `pids` (name -> pid,
    the load generator is added), the CPU its calls cost by process."""
    label: str
    call: Callable[[int, int], Awaitable]
    concurrency: int
    pids: dict[str, int] | None = None
    samples: list[Sample] = dataclasses.field(default_factory=list)  # `started` runs on across slices
    span: float = 0.0                                                # seconds measured, all slices
    used: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # CPU s by process

    def cpu_ms(self) -> dict[str, float]:
        """CPU milliseconds per call by process, plus a total (empty without `pids`)."""
        return per_item_ms(dict(self.used), len(self.samples)) if self.pids is not None else {}


def slices(seconds: float, slice_seconds: float) -> int:
    """Turns per load: about `slice_seconds` each, and at least two from a second on."""
    return max(1 if seconds < 1 else 2, round(seconds / slice_seconds))


async def alternate(sides: list[Side], seconds: float, slice_seconds: float,
                    progress: Callable[[str], None]) -> list[Side]:
    """Run every side for `seconds` in all, in turns of about `slice_seconds` each, in the order
    given; returns `sides`, filled in."""
    rounds = slices(seconds, slice_seconds)
    for round_ in range(rounds):
        for side in sides:
            meter = CpuMeter(side.pids) if side.pids is not None else None
            label = f"{side.label:<22} {round_ + 1}/{rounds}" if rounds > 1 else f"{side.label:<22}"
            taken = await closed_loop(side.call, side.concurrency, seconds / rounds,
                                      lambda text, label=label: progress(f"{label} {text}"))
            if meter is not None:
                side.used.update(meter.used())
            side.samples += [dataclasses.replace(s, started=s.started + side.span) for s in taken]
            side.span += max((s.started + s.latency for s in taken), default=0.0)
    return sides
