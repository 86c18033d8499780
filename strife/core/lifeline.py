"""A supervised node's lifeline to its supervisor: it dies with it (even when the supervisor is
SIGKILLed), waits for its word to start, and tells it when it is ready instead of being polled.

Death: the child sets the kernel's parent-death signal itself, first thing, rather than the
supervisor doing it between fork and exec (`preexec_fn`): Python code there is unsafe in a process
that holds gRPC threads (grpc/grpc#43055), and without it the child is spawned with vfork, which
runs no fork handlers at all. The supervisor passes its pid in STRIFE_SUPERVISOR_PID; a child whose
parent is no longer that pid was orphaned before it could set the signal, and exits at once.

A program that cannot do this itself (etcd, a Go binary) is started through this file, which needs
only the standard library: `python -I -S .../strife/lifeline.py -- PROGRAM ARGS...` sets the
signal, checks the parent and execs PROGRAM; the signal survives execve. (util-linux
`setpriv --pdeathsig KILL` would set it too, but does not close the race with a parent that died
before, and is not installed everywhere.)

Go and ready: the supervisor passes one end of a socket pair (its number in STRIFE_LIFELINE_FD).
A node imports its code, then waits there for one line, `{"name": ..., "log": ...}`, so that it can
be spawned before the nodes it needs are up (or kept as a warm spare and named later). Once it can
do its job it writes one line back: the times its start-up stages ended.
"""
import ctypes
import json
import os
import signal
import socket
import sys

ENV = "STRIFE_SUPERVISOR_PID"
FD = "STRIFE_LIFELINE_FD"
_PR_SET_PDEATHSIG = 1
_line = None  # our end of the socket pair, once opened


class Orphaned(SystemExit):
    """The supervisor died before this child could tie itself to it, or before it said go."""


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


def _socket():
    global _line
    if _line is None and FD in os.environ:
        _line = socket.socket(fileno=int(os.environ.pop(FD)))
    return _line


def wait_for_go():
    """Block until the supervisor says go; what it said ({} when started by hand). With "log", from
    now on this process writes its output to that file itself (a spare started before it had a name)."""
    line = _socket()
    if line is None:
        return {}
    data = b""
    while not data.endswith(b"\n"):
        chunk = line.recv(4096)
        if not chunk:
            raise Orphaned("the supervisor went away before saying go")
        data += chunk
    go = json.loads(data)
    if go.get("log"):
        log = os.open(go["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    return go


def ready(**stages):
    """Tell the supervisor (if any) that this node can serve now; `stages`: name -> time.time()."""
    global _line
    line = _socket()
    if line is None:
        return
    with line:
        line.sendall(json.dumps(stages).encode() + b"\n")
    _line = None


def main(argv):
    args = argv[1:] if argv[:1] == ["--"] else argv
    if not args:
        raise SystemExit("usage: python -I -S lifeline.py -- PROGRAM [ARGS...]")
    hold()
    os.execv(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
