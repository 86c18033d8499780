"""The bench measures each load beside the others in slices taken in turn (alternate.py), so a
machine whose speed drifts during a run slows every load alike."""
import asyncio
import time

from strife.checks.bench.alternate import Side, alternate, slices


def test_loads_take_turns_and_their_samples_run_on_across_slices():
    calls = []  # (side, perf_counter) of every call, in the order they ran

    def recording(name):
        async def call(worker, n):
            calls.append((name, time.perf_counter()))
            await asyncio.sleep(0.002)
            return "ok"
        return call

    echo, payments = Side("echo", recording("echo"), 2), Side("payments", recording("payments"), 2, pids={})
    lines = []
    asyncio.run(alternate([echo, payments], 0.6, 0.2, lines.append))

    order = [name for name, _ in calls]
    turns = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert turns == ["echo", "payments"] * 3  # three slices each, in turn, never both at once
    for side in (echo, payments):
        assert 0.55 < side.span < 0.75, side.span  # about its share of the run, all slices together
        started = [s.started for s in side.samples]
        assert started == sorted(started) and started[-1] > 0.4  # one time line across its slices
        assert len(side.samples) == order.count(side.label)
    assert any(line.startswith("echo") and "3/3" in line for line in lines)  # the progress says which turn


def test_cpu_is_charged_to_the_side_whose_calls_ran():
    def busy(seconds):
        async def call(worker, n):
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
            return "ok"
        return call

    light, heavy = Side("light", busy(0.0002), 1, pids={}), Side("heavy", busy(0.002), 1, pids={})
    asyncio.run(alternate([light, heavy], 0.4, 0.1, lambda text: None))
    light_ms, heavy_ms = light.cpu_ms()["load generator"], heavy.cpu_ms()["load generator"]
    assert heavy_ms > 4 * light_ms, (light_ms, heavy_ms)
    assert Side("unmetered", busy(0), 1).cpu_ms() == {}


def test_a_short_run_is_one_slice_of_each_and_a_longer_one_several():
    assert slices(0.5, 2.0) == 1 and slices(10, 2.0) == 5 and slices(3, 1.0) == 3
    assert slices(1, 2.0) == 2  # from a second on, a load is measured on both sides of another
