"""The life of a supervised node as a small explicit state machine (after supervisord's states.py)."""
import enum


class State(enum.Enum):
    STOPPED = "STOPPED"    # not started yet, or stopped on request
    STARTING = "STARTING"  # spawned, not yet healthy
    RUNNING = "RUNNING"    # healthy at least once since spawn
    PAUSED = "PAUSED"      # SIGSTOPped by chaos
    BACKOFF = "BACKOFF"    # exited unexpectedly; restarting after a delay
    STOPPING = "STOPPING"  # SIGTERM sent, waiting for exit
    EXITED = "EXITED"      # exited and its restart policy says leave it
    FATAL = "FATAL"        # failed too many times in a row; given up


S = State
ALLOWED = {
    S.STOPPED: {S.STARTING},
    S.STARTING: {S.RUNNING, S.BACKOFF, S.EXITED, S.FATAL, S.STOPPING},
    S.RUNNING: {S.BACKOFF, S.EXITED, S.FATAL, S.STOPPING, S.PAUSED},
    S.PAUSED: {S.RUNNING, S.BACKOFF, S.STOPPING},
    S.BACKOFF: {S.STARTING, S.STOPPING, S.STOPPED},
    S.STOPPING: {S.STOPPED},
    S.EXITED: {S.STARTING, S.STOPPING},
    S.FATAL: {S.STARTING, S.STOPPING},
}
# States in which a process of ours may be alive.
ALIVE = {S.STARTING, S.RUNNING, S.PAUSED, S.STOPPING}


class InvalidTransition(RuntimeError):
    pass


def check(old, new):
    if new not in ALLOWED[old]:
        raise InvalidTransition(f"{old.value} -> {new.value}")
