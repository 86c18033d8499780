"""The supervisor's policy with fake processes in virtual time: start order, readiness, restarts,
backoff, FATAL, pause and kill, stop. Milliseconds per test; nothing is started."""
import asyncio
import signal

import pytest

from strife.launcher.states import ALLOWED, State
from strife.launcher.supervisor import STABLE_AFTER
from tests.fake_supervision import TOPOLOGY, settle, supervisor


def run(scenario, text=TOPOLOGY, **options):
    async def main():
        sup, spawner, clock = supervisor(text, **options)
        try:
            return await scenario(sup, spawner, clock)
        finally:
            await stop(sup, clock)
    return asyncio.run(main())


async def stop(sup, clock):
    """Stop, letting virtual time pass for grace periods."""
    stopping = asyncio.create_task(sup.stop())
    while not stopping.done():
        await clock.advance(0.5)
    await stopping


async def started(sup):
    assert await sup.start()
    return sup


def states(sup):
    return {name: p.state for name, p in sup.procs.items()}


def assert_history_allowed(sup):
    for p in sup.procs.values():
        for old, new in zip(p.history, p.history[1:]):
            assert new in ALLOWED[old], (p.name, p.history)


def test_start_prepares_every_process_then_starts_each_once_what_it_needs_is_ready():
    async def scenario(sup, spawner, clock):
        await started(sup)
        assert spawner.prepared == ["etcd", "bank1", "bank2", "gateway", "alice", "bob"]
        assert spawner.spawned[:3] == ["etcd", "alice", "bob"]  # clients need nothing
        assert spawner.etcd_secured_after == 3 and spawner.spawned[3:] == ["bank1", "bank2", "gateway"]
        assert set(states(sup).values()) == {State.RUNNING} and sup.phase == "ready"
        assert all(p.health == "SERVING" for p in sup.procs.values())
        assert spawner.all_started_calls == 1
    run(scenario)


def test_a_node_is_running_only_once_it_says_it_is_ready_and_its_dependents_wait_for_it():
    async def scenario(sup, spawner, clock):
        start = asyncio.create_task(sup.start())
        await settle()
        assert states(sup)["etcd"] is State.STARTING and spawner.spawned == ["etcd", "alice", "bob"]
        await clock.advance(1.0)
        assert states(sup)["etcd"] is State.STARTING  # alive, but not ready: no bank yet
        spawner.current("etcd").become_ready()
        await settle()
        assert states(sup)["etcd"] is State.RUNNING and spawner.spawned[3:] == ["bank1", "bank2"]
        spawner.current("bank1").become_ready()
        await settle()
        assert "gateway" not in spawner.spawned  # it needs every bank
        spawner.current("bank2").become_ready()
        await settle()
        assert states(sup)["gateway"] is State.STARTING
        for name in ("gateway", "alice", "bob"):
            spawner.current(name).become_ready()
        assert await start and sup.phase == "ready"
    run(scenario, ready_at_once=False)


def test_when_a_node_fails_to_start_its_dependents_are_not_started_and_their_processes_dropped():
    async def scenario(sup, spawner, clock):
        start = asyncio.create_task(sup.start())
        await settle()
        spawner.current("etcd").become_ready()
        await settle()
        for delay in (0, 0.2, 0.4, 0.8):  # bank2 dies at every start, past its limit
            await clock.advance(delay)
            spawner.current("bank2").exit(1)
            await settle()
        assert not await start
        assert sup.phase == "failed" and sup.failed == "bank2" and states(sup)["bank2"] is State.FATAL
        assert states(sup)["gateway"] is State.STOPPED and spawner.discarded == ["gateway"]
        assert "gateway" not in spawner.spawned
    run(scenario, ready_at_once=False)


def test_a_process_that_cannot_start_backs_off_exponentially_then_is_fatal_past_the_limit():
    async def scenario(sup, spawner, clock):
        await started(sup)
        spawner.ready_at_once = False
        spawner.current("bank1").exit(-11)  # it had been ready: started again at once
        await settle()
        bank = sup.procs["bank1"]
        assert bank.state is State.STARTING and bank.restarts == 1 and len(spawner.children["bank1"]) == 2
        for failure, delay in ((2, 0.4), (3, 0.8)):  # these never got ready: backoff
            spawner.current("bank1").exit(1)
            await settle()
            assert bank.state is State.BACKOFF and bank.pid is None and bank.last_exit == 1
            await clock.advance(delay - 0.001)
            assert bank.state is State.BACKOFF and len(spawner.children["bank1"]) == failure
            await clock.advance(0.001)
            assert bank.state is State.STARTING and bank.restarts == failure
        spawner.current("bank1").exit(1)
        await settle()
        assert bank.state is State.FATAL and bank.pid is None and bank.restarts == 3
        await clock.advance(60)
        assert len(spawner.children["bank1"]) == 4  # given up: never started again
    run(scenario)


def test_failures_in_a_row_back_off_even_after_being_ready():
    async def scenario(sup, spawner, clock):
        await started(sup)
        bank = sup.procs["bank1"]
        spawner.current("bank1").exit(-9)
        await settle()
        assert bank.state is State.RUNNING and bank.failures == 1  # at once
        spawner.current("bank1").exit(-9)  # again, before it was stable
        await settle()
        assert bank.state is State.BACKOFF
        await clock.advance(0.4)
        assert bank.state is State.RUNNING and bank.restarts == 2
    run(scenario)


def test_a_run_that_stayed_healthy_resets_the_failure_count():
    async def scenario(sup, spawner, clock):
        await started(sup)
        for _ in range(10):  # far more crashes than max_restarts, each after a stable run
            await clock.advance(STABLE_AFTER)
            spawner.current("gateway").exit(-9)
            await settle()
            assert sup.procs["gateway"].state is State.RUNNING  # always at once, as the first time
            assert sup.procs["gateway"].failures == 1
    run(scenario)


def test_restart_policies_judge_a_clean_exit():
    async def scenario(sup, spawner, clock):
        await started(sup)
        first_bob = spawner.current("bob")
        spawner.current("alice").exit(0)  # on-failure (the default): a clean exit is left alone
        first_bob.exit(0)                 # always: restarted
        await settle()
        assert sup.procs["alice"].state is State.EXITED and sup.procs["alice"].last_exit == 0
        assert sup.procs["bob"].state is State.RUNNING and spawner.current("bob") is not first_bob
    run(scenario)


def test_a_node_not_ready_in_time_is_terminated_and_killed_if_it_ignores_sigterm():
    async def scenario(sup, spawner, clock):
        spawner.ready_at_once = False
        spawner.obeys_sigterm = False
        start = asyncio.create_task(sup.start())
        await clock.advance(5.0)  # start_timeout
        etcd = spawner.current("etcd")
        assert etcd.signals == [signal.SIGCONT, signal.SIGTERM] and etcd.alive
        await clock.advance(2.0)  # stop_grace
        assert not etcd.alive and etcd.signals[-1] == signal.SIGKILL
        assert sup.procs["etcd"].state is State.BACKOFF
        spawner.ready_at_once = True
        await clock.advance(0.2)
        assert await start
    run(scenario)


def test_a_paused_node_that_is_killed_is_restarted_and_down_stops_everything():
    async def scenario(sup, spawner, clock):
        await started(sup)
        first = spawner.current("alice")
        await sup.pause("alice")
        assert first.stopped and sup.procs["alice"].state is State.PAUSED
        await sup.kill("alice")  # by the operator: started again at once
        await settle()
        assert sup.procs["alice"].state is State.RUNNING and spawner.current("alice") is not first
        assert not first.alive and sup.procs["alice"].pid == spawner.current("alice").pid
        await sup.pause("alice")
        spawner.current("alice").exit(-9)  # dies while paused, nobody asked: a crash, judged as any
        await settle()
        assert sup.procs["alice"].state is State.RUNNING and sup.procs["alice"].failures == 1
        await sup.pause("alice")
        spawner.current("alice").exit(-9)  # again, in a row
        await settle()
        assert sup.procs["alice"].state is State.BACKOFF and sup.procs["alice"].pid is None
        await clock.advance(0.4)
        assert sup.procs["alice"].state is State.RUNNING and len(spawner.children["alice"]) == 4
        await sup.stop()
        assert set(states(sup).values()) == {State.STOPPED}
        assert not any(c.alive for children in spawner.children.values() for c in children)
        assert_history_allowed(sup)
    run(scenario)


def test_a_paused_node_past_its_limit_that_dies_is_fatal_and_down_still_stops_cleanly():
    async def scenario(sup, spawner, clock):
        await started(sup)
        for delay in (0.2, 0.4, 0.8):  # use up alice's restarts
            spawner.current("alice").exit(1)
            await clock.advance(delay)
        await sup.pause("alice")
        spawner.current("alice").exit(-9)  # dies while paused
        await settle()
        assert sup.procs["alice"].state is State.FATAL and sup.procs["alice"].pid is None
        assert sup.status()["nodes"][4]["pid"] is None
        await sup.stop()
        assert set(states(sup).values()) == {State.STOPPED} and sup.phase == "stopped"
        assert_history_allowed(sup)
    run(scenario)


def test_stop_continues_a_paused_node_so_it_can_act_on_sigterm():
    async def scenario(sup, spawner, clock):
        await started(sup)
        await sup.pause("bank2")
        child = spawner.current("bank2")
        await sup.stop_node("bank2")
        assert child.returncode == 0 and signal.SIGKILL not in child.signals
        assert sup.procs["bank2"].state is State.STOPPED
    run(scenario)


def test_pause_for_resumes_by_itself_unless_the_process_was_replaced():
    async def scenario(sup, spawner, clock):
        await started(sup)
        await sup.pause("bank1", seconds=3)
        await clock.advance(3)
        assert sup.procs["bank1"].state is State.RUNNING and not spawner.current("bank1").stopped
        await sup.pause("bank1", seconds=3)
        await sup.kill("bank1")
        await clock.advance(0.2)
        await sup.pause("bank1")  # the new process, paused without a timer
        await clock.advance(5)
        assert sup.procs["bank1"].state is State.PAUSED  # the old timer did not resume it
    run(scenario)


def test_refusals_are_value_errors():
    async def scenario(sup, spawner, clock):
        await started(sup)
        await sup.pause("bank1")
        with pytest.raises(ValueError, match="only a RUNNING node can be paused"):
            await sup.pause("bank1")
        with pytest.raises(ValueError, match="not PAUSED"):
            await sup.resume("bank2")
        spawner.current("alice").exit(0)
        await settle()
        with pytest.raises(ValueError, match="nothing to kill"):
            await sup.kill("alice")
    run(scenario)


def test_a_spawn_that_fails_counts_as_a_failed_run():
    async def scenario(sup, spawner, clock):
        await started(sup)
        real_spawn = spawner.spawn

        async def broken(spec):
            if spec.name == "gateway":
                raise FileNotFoundError("no such program")
            return await real_spawn(spec)
        spawner.spawn = broken
        spawner.current("gateway").exit(-9)
        for delay in (0.2, 0.4, 0.8):
            await clock.advance(delay)
        assert sup.procs["gateway"].state is State.FATAL and sup.procs["gateway"].last_exit is None
    run(scenario)


def test_restart_command_and_stop_mid_start():
    async def scenario(sup, spawner, clock):
        await started(sup)
        first = spawner.current("gateway")
        assert await sup.restart_node("gateway", timeout=10)
        assert not first.alive and spawner.current("gateway").alive
        assert sup.procs["gateway"].restarts == 1 and sup.procs["gateway"].state is State.RUNNING
    run(scenario)

    async def stop_while_starting(sup, spawner, clock):
        spawner.ready_at_once = False
        running = asyncio.create_task(sup.run())
        await clock.advance(1)
        sup.request_stop()
        await settle()
        await clock.advance(10)
        await running
        assert set(states(sup).values()) == {State.STOPPED}
        assert not any(c.alive for c in spawner.children["etcd"])
    run(stop_while_starting)


def test_a_kill_the_operator_orders_restarts_at_once_and_never_counts_as_a_failure():
    async def scenario(sup, spawner, clock):
        await started(sup)
        bank = sup.procs["bank1"]
        for n in range(1, 11):  # far past max_restarts (3), kills close together
            await sup.kill("bank1")
            await settle()  # no time passes: no backoff
            assert bank.state is State.RUNNING and bank.restarts == n and bank.failures == 0
            assert len(spawner.alive("bank1")) == 1
        await sup.pause("bank1")
        await sup.kill("bank1")  # paused or not
        await settle()
        assert bank.state is State.RUNNING and bank.failures == 0
        spawner.current("bank1").exit(-11)  # a real crash still counts
        await settle()
        assert bank.state is State.RUNNING and bank.failures == 1
        spawner.current("bank1").exit(-11)
        await settle()
        assert bank.state is State.BACKOFF and bank.failures == 2
        await clock.advance(0.4)
        assert bank.state is State.RUNNING
    run(scenario)


def test_a_kill_is_answered_once_the_supervisor_has_seen_the_process_die():
    """What status shows after `strife chaos --kill` returned is never the dead process still RUNNING
    (a script that waited for RUNNING then went on while the node was down)."""
    async def scenario(sup, spawner, clock):
        await started(sup)
        dead = spawner.current("bank1")
        pid = await sup.kill("bank1")  # no settle(): what the answer's reader sees next
        bank = next(n for n in sup.status()["nodes"] if n["name"] == "bank1")
        assert pid == dead.pid and bank["pid"] != dead.pid
        assert not (bank["state"] == "RUNNING" and bank["health"] == "SERVING" and bank["restarts"] == 0), bank
    run(scenario)


def test_a_killed_node_that_cannot_be_started_again_backs_off_instead_of_spinning():
    """A failed start after a kill is a failure like any other: it used to keep the kill's
    'start again at once' forever, retrying without yielding (the supervisor hung at full CPU)."""
    async def scenario(sup, spawner, clock):
        await started(sup)
        spawner.unstartable.add("bank1")
        await sup.kill("bank1")
        bank = sup.procs["bank1"]
        # each failed start counted as a failure: the first is retried at once, the next backs off
        assert bank.state is State.BACKOFF and spawner.failed_spawns["bank1"] == bank.failures == 2
        spawner.unstartable.discard("bank1")
        await clock.advance(1.0)  # past its backoff: started again
        assert bank.state is State.RUNNING
    run(scenario)


def test_a_kill_leaves_a_node_whose_policy_is_never_restart_exited():
    async def scenario(sup, spawner, clock):
        await started(sup)
        await sup.kill("alice")
        await settle()
        assert sup.procs["alice"].state is State.RUNNING  # on-failure: a SIGKILL is a failure exit
    run(scenario)

    async def never(sup, spawner, clock):
        await started(sup)
        await sup.kill("alice")
        await settle()
        assert sup.procs["alice"].state is State.EXITED and sup.procs["alice"].last_exit == -9
    run(never, TOPOLOGY.replace('alice: {bank: bank1, balance: "100.00"}',
                                'alice: {bank: bank1, balance: "100.00", restart: "no"}'))
