"""A child ties its life to its supervisor's itself (no Python between fork and exec)."""
import os
import signal
import subprocess
import sys

import psutil

from strife import lifeline
from tests.conftest import wait_for

LIFELINE = [sys.executable, "-P", "-m", "strife.lifeline", "--"]


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
