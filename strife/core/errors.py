"""One root for the errors a person can act on, each carrying the exit code `strife` ends with.

Commands raise them (or let one raised below through); strife/cli.py alone turns one into a line
on stderr and its exit code. Library errors that are a user's mistake (an amount, a duration, a
topology) derive from them too, so their messages reach the user as they are.
"""
import enum


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1       # what was asked did not happen, or not all of it
    BAD_INPUT = 2    # the request is wrong: nothing was done
    NOT_RUNNING = 3  # no deployment is running here
    QUEUED = 4       # `pay`: the payment waits in the outbox, to be delivered later
    UNSUPPORTED = 5  # this user or machine cannot do it (not root, no netem in the kernel): nothing was done


class StrifeError(Exception):
    """A problem shown to the user as one message, without a traceback."""
    exit_code = Exit.FAILED


class BadInput(StrifeError):
    """The user's request is wrong (and nothing was done): they can fix it."""
    exit_code = Exit.BAD_INPUT


class Failed(StrifeError):
    """What was asked could not be done."""
    exit_code = Exit.FAILED


class NotRunning(StrifeError):
    """No supervisor answers for this deployment."""
    exit_code = Exit.NOT_RUNNING


class Unsupported(StrifeError):
    """The request is sound but this user or machine cannot carry it out (it needs root, or a
    kernel feature that is missing): nothing was done."""
    exit_code = Exit.UNSUPPORTED
