"""The supervisor's state machine against random event sequences (fake processes, virtual time):
whatever happens, no exception, only allowed transitions, no dead pid shown as alive, and a stop
always ends with every node STOPPED and no process left."""
import asyncio

from hypothesis import HealthCheck, given, settings, strategies as st

from strife.launcher.states import ALIVE, ALLOWED, State
from tests.fake_supervision import settle, supervisor

# One node of each kind (few nodes: events meet the same node often); alice may be restarted once only.
TOPOLOGY = """
settings: {backoff: 200ms, max_restarts: 3, start_timeout: 5s, stop_grace: 2s}
etcd: {members: 1}
banks: {bank1: {}}
gateway: {restart: always}
clients: {alice: {bank: bank1, max_restarts: 1}}
"""
NODES = ["etcd", "bank1", "gateway", "alice"]
node = st.sampled_from(NODES)
event = st.one_of(
    st.tuples(st.just("exit"), node, st.sampled_from([0, 1, -9, -11])),
    st.tuples(st.just("ready"), node),
    st.tuples(st.just("pause"), node, st.sampled_from([None, 0.5, 3])),
    st.tuples(st.just("resume"), node),
    st.tuples(st.just("kill"), node),
    st.tuples(st.just("restart"), node),
    st.tuples(st.just("tick"), st.sampled_from([1, 50, 200, 1000, 6000])),
)


def check_invariants(sup, spawner, launched):
    for task in launched:
        if task.done() and not task.cancelled():
            assert task.exception() is None, repr(task.exception())
    for name, proc in sup.procs.items():
        for old, new in zip(proc.history, proc.history[1:]):
            assert new in ALLOWED[old], (name, proc.history)
        alive = spawner.alive(name)
        assert len(alive) <= 1, (name, alive)
        if proc.state not in ALIVE:
            assert not alive, (name, proc.state)
        if proc.state in (State.RUNNING, State.PAUSED):
            assert alive == [proc.child], (name, proc.state)
    for shown in sup.status()["nodes"]:
        if shown["pid"] is not None:
            assert shown["pid"] in [c.pid for c in spawner.alive(shown["name"])], shown


async def play(events, ready_at_once, obeys_sigterm):
    sup, spawner, clock = supervisor(TOPOLOGY, ready_at_once=ready_at_once)
    spawner.obeys_sigterm = obeys_sigterm
    launched, requests = [], []
    launch = sup._launch

    def recording_launch(proc):
        launch(proc)
        launched.append(sup._tasks[proc.name])
    sup._launch = recording_launch
    starting = asyncio.create_task(sup.start())
    await settle()
    for kind, *args in events:
        if kind == "exit" and spawner.alive(args[0]):
            spawner.alive(args[0])[0].exit(args[1])
        elif kind == "ready" and spawner.alive(args[0]):
            spawner.alive(args[0])[0].become_ready()
        elif kind in ("pause", "resume", "kill"):
            try:
                await getattr(sup, kind)(*args)
            except ValueError:
                pass  # a refusal the control socket passes on, e.g. pausing a node that is not RUNNING
        elif kind == "restart":
            requests.append(asyncio.create_task(sup.restart_node(args[0], timeout=30)))
        elif kind == "tick":
            await clock.advance(args[0] / 1000)
        await settle()
        check_invariants(sup, spawner, launched)
    starting.cancel()  # as run() does when asked to stop mid-start
    stopping = asyncio.create_task(sup.stop())
    while not stopping.done():
        await clock.advance(0.5)
    await stopping
    await settle()
    check_invariants(sup, spawner, launched)
    assert sup.phase == "stopped"
    assert all(p.state is State.STOPPED for p in sup.procs.values()), {n: p.state for n, p in sup.procs.items()}
    assert not any(spawner.alive(name) for name in NODES)
    assert all(task.done() for task in launched)
    for request in requests:
        await clock.advance(30)
        assert request.done()
        if not request.cancelled() and request.exception() is not None:
            assert isinstance(request.exception(), TimeoutError), repr(request.exception())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, max_size=30), st.booleans(), st.booleans())
def test_any_sequence_of_events_keeps_the_supervisor_sound(events, ready_at_once, obeys_sigterm):
    asyncio.run(play(events, ready_at_once, obeys_sigterm))
