"""The outbox's doorbell (strife/client/bell.py): a waiter hears another process's write at once
instead of polling, a dead waiter's socket is cleared, and where no socket can be made the wait
falls back to polling. Real SQLite files and real processes; no deployment."""
import asyncio
import os
import subprocess
import sys
import time

import psutil

from strife.client.bell import Bell
from strife.client.outbox import BACKSTOP, Outbox

QUEUE_ONE = """
import sys
from pathlib import Path
from strife.client.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]))
outbox.add(sys.argv[2], "bob", 100)
outbox.close()
"""


def queue_from_another_process(path, txn_id):
    subprocess.run([sys.executable, "-c", QUEUE_ONE, str(path), txn_id], check=True, timeout=60)


def test_a_write_in_another_process_wakes_the_waiter_before_its_backstop(tmp_path):
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.listen()
    queue_from_another_process(path, "t1")  # rung before the wait begins: the ring waits in the socket

    async def wait():
        began = time.monotonic()
        woke = await outbox.changed(within=30.0)
        return woke, time.monotonic() - began
    woke, took = asyncio.run(wait())
    assert woke and took < BACKSTOP
    assert [e.txn_id for e in outbox.pending()] == ["t1"]
    outbox.close()
    assert not list((tmp_path / "outbox.bells").iterdir())  # its socket left with it


def test_an_idle_waiter_sleeps_instead_of_polling(tmp_path):
    """A minute of waiting costs a few wakeups, not 50 a second (the old 20 ms poll)."""
    outbox = Outbox(tmp_path / "outbox.db")
    me = psutil.Process()

    async def wait():
        before = me.num_ctx_switches().voluntary
        assert not await outbox.changed(within=2.5)
        return me.num_ctx_switches().voluntary - before
    switches = asyncio.run(wait())
    outbox.close()
    assert switches < 40, switches  # polling every 20 ms would be ~125 wakeups in 2.5 s


def test_a_socket_left_by_a_killed_waiter_is_removed_by_the_next_ring(tmp_path):
    bells = tmp_path / "bells"
    script = ("import sys, time; from pathlib import Path; from strife.client.bell import Bell; "
              "b = Bell(Path(sys.argv[1])); assert b.listen(); print('ready', flush=True); time.sleep(60)")
    waiter = subprocess.Popen([sys.executable, "-c", script, str(bells)], stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout.readline().strip() == "ready"
        assert len(list(bells.iterdir())) == 1
    finally:
        waiter.kill()
        waiter.wait()
    assert len(list(bells.iterdir())) == 1  # SIGKILL: nobody removed it
    Bell(bells).ring()
    assert list(bells.iterdir()) == []


def test_a_bell_rings_others_but_never_itself(tmp_path):
    bells = tmp_path / "bells"
    mine, other = Bell(bells), Bell(bells)
    assert mine.listen()
    mine.ring()  # the only listener is this process's own: nothing to wake

    async def heard():
        return await mine.wait(0.2)
    assert not asyncio.run(heard())
    mine.close(), other.close()


def test_where_no_socket_fits_the_wait_polls_as_before(tmp_path):
    deep = tmp_path / ("d" * 100) / "outbox.db"  # a socket address holds 107 bytes
    deep.parent.mkdir()
    outbox = Outbox(deep)
    assert not outbox.bell.listen()
    queue_from_another_process(deep, "t1")

    async def wait():
        writer = asyncio.create_task(asyncio.to_thread(queue_from_another_process, deep, "t2"))
        woke = await outbox.changed(within=30.0)
        await writer
        return woke
    assert asyncio.run(wait())
    outbox.close()
    assert os.path.exists(deep)


def test_a_payment_settled_just_after_the_waiter_read_it_is_seen_at_once(tmp_path):
    """The CLI's wait for the client node's answer (delivery.await_outcome): the node settles the
    payment between the CLI's read of its row and the start of its wait. The waiter must see that
    write, not sleep to its deadline (one of six `pay --wait 60` calls in a full run took 60 s)."""
    from strife.client.delivery import await_outcome
    from strife.core.outcomes import Outcome
    path = tmp_path / "outbox.db"
    waiter, node = Outbox(path), Outbox(path)
    entry = waiter.add("t1", "bob", 100)
    read = waiter.get

    def read_then_node_settles(txn_id):
        row = read(txn_id)
        node.settle(txn_id, Outcome.COMMITTED)  # the node's write lands right after the read
        waiter.get = read
        return row
    waiter.get = read_then_node_settles

    async def wait():
        return await asyncio.wait_for(await_outcome(waiter, entry, deadline=time.monotonic() + 60), timeout=10)
    try:
        settled = asyncio.run(wait())
    finally:
        waiter.close()
        node.close()
    assert settled.outcome is Outcome.COMMITTED
