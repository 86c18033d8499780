"""Closed-loop load: C callers, each sending its next request as soon as the last one answered (or,
paced, not before its turn at a given rate: the same work per second whatever the answers cost)."""
import asyncio
import dataclasses
import time


@dataclasses.dataclass
class Sample:
    started: float   # seconds since the run began
    latency: float   # seconds
    outcome: str     # ok | aborted | error
    kind: str = ""   # what was asked, when the caller tells (e.g. same-bank or cross-bank)


async def closed_loop(call, concurrency, seconds, progress=None, rate=None):
    """`call(worker, n)` performs one request and returns an outcome string, or (outcome, kind).
    With `rate` (requests/s, all callers together) a caller's n-th request waits for its turn,
    began + (n * concurrency + worker) / rate; a late one goes at once. Returns the samples."""
    samples = []
    began = time.perf_counter()
    deadline = began + seconds

    async def worker(w):
        n = 0
        while (now := time.perf_counter()) < deadline:
            if rate and (turn := began + (n * concurrency + w) / rate) > now:
                await asyncio.sleep(turn - now)
                if (now := time.perf_counter()) >= deadline:
                    break
            kind = ""
            try:
                outcome = await call(w, n)
                if isinstance(outcome, tuple):
                    outcome, kind = outcome
            except Exception:
                outcome = "error"
            end = time.perf_counter()
            samples.append(Sample(now - began, end - now, outcome, kind))
            n += 1

    async def report():
        assert progress is not None
        while time.perf_counter() < deadline:
            await asyncio.sleep(1.0)
            elapsed = time.perf_counter() - began
            progress(f"{min(elapsed, seconds):5.1f}s  {len(samples)} done  {len(samples) / elapsed:8.1f}/s")

    tasks = [asyncio.create_task(worker(w)) for w in range(concurrency)]
    reporter = asyncio.create_task(report()) if progress else None
    await asyncio.gather(*tasks)
    if reporter and progress:
        reporter.cancel()
        progress(f"{seconds:5.1f}s  {len(samples)} done  {len(samples) / seconds:8.1f}/s")  # each phase's last word
    return samples
