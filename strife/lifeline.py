"""A supervised child's lifeline: it dies with its supervisor, even when the supervisor is SIGKILLed.

The child sets the kernel's parent-death signal itself, first thing, rather than the supervisor
doing it between fork and exec (`preexec_fn`): Python code there is unsafe in a process that holds
gRPC threads (grpc/grpc#43055), and without it the child is spawned with vfork, which runs no fork
handlers at all. The supervisor passes its pid in STRIFE_SUPERVISOR_PID; a child whose parent is
no longer that pid was orphaned before it could set the signal, and exits at once.

A program that cannot do this itself (etcd, a Go binary) is started through this module:
`python -P -m strife.lifeline -- PROGRAM ARGS...` sets the signal, checks the parent and execs
PROGRAM; the signal survives execve. (util-linux `setpriv --pdeathsig KILL` would set it too, but
does not close the race with a parent that died before, and is not installed everywhere.)
"""
import ctypes
import os
import signal
import sys

ENV = "STRIFE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


class Orphaned(SystemExit):
    """The supervisor died before this child could tie itself to it."""


def hold():
    """Die by SIGKILL when the supervisor named in the environment dies; nothing when started by hand.

    The signal is tied to the thread that forked us: the supervisor spawns from its main thread."""
    supervisor = os.environ.pop(ENV, None)
    if not supervisor:
        return
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is None:  # not Linux: no parent-death signal; the supervisor's own stop still applies
        return
    if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != int(supervisor):
        raise Orphaned(f"supervisor {supervisor} is gone; not starting")


def main(argv):
    args = argv[1:] if argv[:1] == ["--"] else argv
    if not args:
        raise SystemExit("usage: python -P -m strife.lifeline -- PROGRAM [ARGS...]")
    hold()
    os.execv(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
