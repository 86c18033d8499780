"""Failpoints: named protocol steps where an operator can make a node misbehave on purpose.

A step is armed with an action; code calls `await failpoints.hit("prepare")` at that step.
Actions: pause (wait until cleared), delay:DURATION, error (raise FailpointFired), crash
(exit the process at once, as a kill -9 would, without any clean-up).
"""
import logging
import os

from strife.core.durations import DurationError, parse_duration
from strife.core.errors import BadInput

ACTIONS = ("pause", "delay", "error", "crash")
CRASH_EXIT = 86  # the exit status of a `crash` failpoint: `strife status` and `up -d` name it
# The named steps each kind of node stops at; `start` is before a node opens its port, the
# gateway's `before-banks` after it opened its port and before it read the list of banks.
# The steps of two-phase commit itself (what `strife torture` arms at random).
TWO_PHASE = {
    "bank": ("before-prepare", "prepare", "commit", "abort"),
    "gateway": ("after-prepare", "after-decision", "before-commit"),
}
STEPS = {
    "bank": ("start", *TWO_PHASE["bank"], "transfer"),
    "gateway": ("start", "before-banks", *TWO_PHASE["gateway"]),
    "client": ("start", "send", "after-send"),
    "etcd": (),
}


class FailpointError(BadInput, ValueError):
    """A failpoint spec that cannot be understood."""


class FailpointFired(Exception):
    """The `error` action: the step fails as if something went wrong there."""


def parse_action(text):
    """'delay:2s' -> ('delay', 2.0); 'crash' -> ('crash', None)."""
    name, _, arg = text.partition(":")
    if name not in ACTIONS:
        raise FailpointError(f"{text!r}: the action must be one of pause, delay:DURATION, error, crash")
    if name == "delay":
        try:
            return name, parse_duration(arg)
        except DurationError as exc:
            raise FailpointError(f"{text!r}: {exc}") from None
    if arg:
        raise FailpointError(f"{text!r}: {name} takes no argument")
    return name, None


class Failpoints:
    """The failpoints armed in a running node (asyncio: imported here, not by whoever reads a topology)."""

    def __init__(self, armed=(), on_hit=None):
        # on_hit(step, action): told of every armed step reached (the node's timeline records it);
        # handed in, since core imports nothing above it
        self._on_hit = on_hit
        self._armed = {}
        self._cleared = {}
        for step, action in armed:
            self.set(step, action)

    def set(self, step, action):
        parse_action(action)
        self.clear(step)
        self._armed[step] = action
        import asyncio
        self._cleared[step] = asyncio.Event()  # binds to a loop only when awaited

    def clear(self, step=None):
        for name in [step] if step else list(self._armed):
            self._armed.pop(name, None)
            event = self._cleared.pop(name, None)
            if event is not None:
                event.set()

    def items(self):
        return sorted(self._armed.items())

    async def hit(self, step):
        action = self._armed.get(step)
        if action is None:
            return
        if self._on_hit is not None:
            self._on_hit(step, action)
        name, arg = parse_action(action)
        if name == "crash":
            # said first, so the node's log tells why it ended (the supervisor's shows only the code)
            logging.getLogger(__name__).critical("failpoint %s=crash fired: exiting at once with %d, as a "
                                                 "kill -9 would", step, CRASH_EXIT)
            os._exit(CRASH_EXIT)
        if name == "error":
            raise FailpointFired(f"failpoint {step} fired")
        if name == "delay":
            import asyncio
            await asyncio.sleep(arg or 0)
            return
        await self._cleared[step].wait()

