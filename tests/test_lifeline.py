"""A child ties its life to its supervisor's itself (no Python between fork and exec)."""
import os
import signal
import socket
import subprocess
import sys

import psutil

from strife.core import lifeline
from tests.helpers import wait_for

LIFELINE = [sys.executable, "-I", "-S", lifeline.__file__, "--"]  # as etcd is started


def test_a_child_started_through_the_lifeline_dies_when_its_supervisor_is_killed():
    # a stand-in supervisor: spawns `sleep` through the lifeline, says its pid, then waits
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, subprocess, sys
child = subprocess.Popen({LIFELINE!r} + ["/bin/sleep", "120"],
                         env=dict(os.environ, {lifeline.ENV}=str(os.getpid())))
print(child.pid, flush=True)
child.wait()
"""], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        wait_for(lambda: child.name() == "sleep", what="the lifeline to exec sleep")
        assert lifeline.ENV not in child.environ()  # not passed on to the program
        os.kill(parent.pid, signal.SIGKILL)
        wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, timeout=10,
                 what="sleep to die with its supervisor")
    finally:
        parent.kill()
        parent.wait()


def test_a_child_whose_supervisor_is_already_gone_does_not_start():
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = subprocess.run(LIFELINE + ["/bin/echo", "started"], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, **{lifeline.ENV: str(gone.pid)}))
    assert result.returncode != 0 and "started" not in result.stdout
    assert f"supervisor {gone.pid} is gone" in result.stderr


def test_without_a_supervisor_in_the_environment_the_program_just_runs():
    env = {k: v for k, v in os.environ.items() if k != lifeline.ENV}
    result = subprocess.run(LIFELINE + ["/bin/echo", "started"], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0 and result.stdout == "started\n"


def test_a_node_waits_for_go_then_says_ready_through_its_socket():
    """Both ends of the socket pair, as a node and the supervisor use them (here in one process)."""
    import asyncio
    import socket

    ours, theirs = socket.socketpair()
    os.environ[lifeline.FD] = str(theirs.detach())
    try:
        ours.sendall(b'{"name": "bank2"}\n')
        assert lifeline.wait_for_go() == {"name": "bank2"}
        lifeline.ready(listening=1.0, ready=2.0)
        assert ours.recv(100) == b'{"listening": 1.0, "ready": 2.0}\n' and ours.recv(100) == b""
        assert lifeline.FD not in os.environ and lifeline.wait_for_go() == {}  # said once
    finally:
        os.environ.pop(lifeline.FD, None)
        ours.close()

    async def supervisor_side():
        from strife.launcher.process import Lifeline
        line = Lifeline()
        child = socket.socket(fileno=os.dup(line.child_fd))
        line.spawned()
        await line.go(name="alice")
        assert child.recv(100) == b'{"name": "alice"}\n'
        child.sendall(b'{"ready": 3.0}\n')
        assert await line.wait() == {"ready": 3.0}
        child.close()
        line.close()
    asyncio.run(supervisor_side())


def test_a_node_killed_before_reading_go_is_a_death_not_a_supervision_failure():
    """Killed before it read `go`, a node's end closes with unread data: our read then fails with
    ECONNRESET instead of EOF. Waiting for its readiness must treat that as the death it is (the
    exit is seen by waiting for the process), not raise into the supervisor."""
    import asyncio

    from strife.launcher.process import Lifeline

    async def scenario():
        line = Lifeline()
        theirs = socket.socket(fileno=os.dup(line.child_fd))
        line.spawned()
        await line.go(stage="go")
        theirs.close()  # the child dies with `go` unread
        waiting = asyncio.ensure_future(line.wait())
        done, _ = await asyncio.wait([waiting], timeout=0.5)
        line.close()
        waiting.cancel()
        return done

    assert asyncio.run(scenario()) == set()  # still waiting: no exception, no answer
