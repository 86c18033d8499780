"""`strife down` returns once the supervisor has exited, not once someone has reaped it: a detached
supervisor's parent is init, and an init that reaps late (as in some containers) kept every `down`
waiting on a zombie for seconds."""
import subprocess

import psutil

from strife.launcher.control import wait_ended
from tests.helpers import wait_for


def test_a_process_that_exited_counts_as_ended_before_its_parent_reaps_it():
    # `sleep 0` exits at once; its parent becomes `sleep 30` (exec), which never reaps it: a zombie
    # that is not ours, as a supervisor is to `strife down`
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=10, what="a zombie")
        assert wait_ended(pid, timeout=5) is True
    finally:
        parent.kill()
        parent.wait()


def test_a_running_process_has_not_ended_and_a_child_that_ended_is_reaped():
    running = subprocess.Popen(["sleep", "30"])
    try:
        assert wait_ended(running.pid, timeout=0.2) is False
    finally:
        running.kill()
    assert wait_ended(running.pid, timeout=5) is True
    assert not psutil.pid_exists(running.pid)  # our own child: reaped, no zombie left behind
    running.returncode = -9  # reaped above: Popen must not wait for it again


def test_a_process_that_is_gone_has_ended():
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert wait_ended(gone.pid, timeout=5) is True


def test_without_pidfds_a_zombie_still_counts_as_ended(monkeypatch):
    """A kernel before 5.3 has no pidfd_open: the fallback looks, and counts a zombie as ended."""
    import errno
    import os

    def no_pidfds(pid):
        raise OSError(errno.ENOSYS, "Function not implemented")
    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=10, what="a zombie")
        assert wait_ended(pid, timeout=5) is True
        assert wait_ended(parent.pid, timeout=0.1) is False  # and a live process has not ended
    finally:
        parent.kill()
        parent.wait()
