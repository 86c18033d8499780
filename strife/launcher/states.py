"""The life of a supervised node as a small explicit state machine (after supervisord's states.py).

Every transition the supervisor can meet is in the table: a node can die in any state in which a
process of ours is alive, and its death is judged the same way whatever it was doing (a paused
node that is killed is restarted, or given up on, like a running one).
"""
import enum


class State(enum.Enum):
    STOPPED = "STOPPED"    # not started yet, or stopped on request
    STARTING = "STARTING"  # spawned, not yet ready
    RUNNING = "RUNNING"    # ready at least once since spawn
    PAUSED = "PAUSED"      # SIGSTOPped by chaos
    BACKOFF = "BACKOFF"    # exited unexpectedly; restarting after a delay
    STOPPING = "STOPPING"  # SIGTERM sent, waiting for exit
    EXITED = "EXITED"      # exited and its restart policy says leave it
    FATAL = "FATAL"        # failed too many times in a row; given up


S = State
# What a process's death leads to: a restart after a delay, at once (a kill the operator ordered),
# its policy's verdict, or giving up.
_DEATH = {S.BACKOFF, S.STARTING, S.EXITED, S.FATAL}
ALLOWED = {
    S.STOPPED: {S.STARTING},
    S.STARTING: _DEATH | {S.RUNNING, S.STOPPING},
    S.RUNNING: _DEATH | {S.PAUSED, S.STOPPING},
    S.PAUSED: _DEATH | {S.RUNNING, S.STOPPING},
    S.BACKOFF: {S.STARTING, S.STOPPED},
    S.STOPPING: {S.STOPPED},
    S.EXITED: {S.STARTING, S.STOPPED},
    S.FATAL: {S.STARTING, S.STOPPED},
}
# States in which a process of ours may be alive.
ALIVE = {S.STARTING, S.RUNNING, S.PAUSED, S.STOPPING}


class InvalidTransition(RuntimeError):
    pass


def check(old, new):
    if new not in ALLOWED[old]:
        raise InvalidTransition(f"{old.value} -> {new.value}")
