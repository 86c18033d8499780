"""The scrypt thread shared fairly: round-robin per key, bounded queues, gates and cancellations."""
import asyncio
import threading

import pytest

from strife.nodes.gateway.fair_scheduler import FairScheduler, QueueFull


class Blocker:
    """A job that holds the worker thread until released, so tests can queue behind it."""

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self):
        self.started.set()
        assert self.release.wait(10)
        return "blocker"


async def hold_worker(scheduler):
    blocker = Blocker()
    task = asyncio.ensure_future(scheduler.run("holder", blocker))
    assert await asyncio.to_thread(blocker.started.wait, 10)
    return blocker, task


def test_keys_are_served_round_robin_so_a_late_key_is_not_stuck_behind_a_flood():
    ran = []

    async def main():
        scheduler = FairScheduler(max_waiting=10)
        blocker, held = await hold_worker(scheduler)
        flood = [asyncio.ensure_future(scheduler.run("alice", ran.append, f"alice{i}")) for i in range(8)]
        await asyncio.sleep(0)
        bob = asyncio.ensure_future(scheduler.run("bob", ran.append, "bob"))
        await asyncio.sleep(0)
        blocker.release.set()
        await asyncio.gather(held, bob, *flood)
        scheduler.close()

    asyncio.run(main())
    assert sorted(ran) == sorted([f"alice{i}" for i in range(8)] + ["bob"])
    assert ran.index("bob") <= 1  # at most one of alice's eight before bob, not all of them


def test_a_key_may_have_only_so_many_jobs_waiting_and_others_are_unaffected():
    async def main():
        scheduler = FairScheduler(max_waiting=3)
        blocker, held = await hold_worker(scheduler)
        waiting = [asyncio.ensure_future(scheduler.run("alice", str, i)) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await scheduler.run("alice", str, 99)
        assert scheduler.waiting("alice") == 3
        bob = asyncio.ensure_future(scheduler.run("bob", str, "b"))
        unbounded = asyncio.ensure_future(scheduler.run("alice", str, "hash", bounded=False))
        await asyncio.sleep(0)
        blocker.release.set()
        results = await asyncio.gather(held, bob, unbounded, *waiting)
        scheduler.close()
        return results

    assert asyncio.run(main()) == ["blocker", "b", "hash", "0", "1", "2"]


def test_a_gate_that_refuses_keeps_the_job_from_running_and_reaches_the_caller():
    ran = []

    def locked():
        raise PermissionError("locked out meanwhile")

    async def main():
        scheduler = FairScheduler()
        blocker, held = await hold_worker(scheduler)
        gated = asyncio.ensure_future(scheduler.run("alice", ran.append, "alice", gate=locked))
        passes = asyncio.ensure_future(scheduler.run("bob", ran.append, "bob", gate=lambda: None))
        await asyncio.sleep(0)
        blocker.release.set()
        await held
        with pytest.raises(PermissionError, match="locked out meanwhile"):
            await gated
        await passes
        scheduler.close()

    asyncio.run(main())
    assert ran == ["bob"]


def test_what_a_job_records_on_completion_is_seen_by_the_next_jobs_gate():
    seen = []

    async def main():
        scheduler = FairScheduler()
        blocker, held = await hold_worker(scheduler)
        recorded = []
        first = asyncio.ensure_future(scheduler.run("alice", str, "first", then=recorded.append))
        second = asyncio.ensure_future(scheduler.run("alice", str, "second", gate=lambda: seen.append(list(recorded))))
        await asyncio.sleep(0)
        blocker.release.set()
        await asyncio.gather(held, first, second)
        scheduler.close()

    asyncio.run(main())
    assert seen == [["first"]]


def test_a_caller_that_gives_up_frees_its_place_and_its_job_never_runs():
    ran = []

    async def main():
        scheduler = FairScheduler(max_waiting=1)
        blocker, held = await hold_worker(scheduler)
        impatient = asyncio.ensure_future(scheduler.run("alice", ran.append, "gave up"))
        await asyncio.sleep(0)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        assert scheduler.waiting("alice") == 0
        patient = asyncio.ensure_future(scheduler.run("alice", ran.append, "waited"))  # the place is free
        await asyncio.sleep(0)
        blocker.release.set()
        await asyncio.gather(held, patient)
        scheduler.close()

    asyncio.run(main())
    assert ran == ["waited"]


def test_an_exception_in_a_job_reaches_only_its_caller():
    def fails():
        raise ValueError("bad salt")

    async def main():
        scheduler = FairScheduler()
        with pytest.raises(ValueError, match="bad salt"):
            await scheduler.run("alice", fails)
        assert await scheduler.run("alice", len, "still works") == 11
        scheduler.close()

    asyncio.run(main())
