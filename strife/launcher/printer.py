"""Lines for people: name-prefixed and coloured on a terminal (after honcho's printer), or, for the
detached supervisor, records in its own log file.

Nodes' lines carry their own time (a node writes `01:16:34.493 INFO ...` for the foreground
supervisor, and its log file has full dates): they are relayed as they are, never stamped again.
"""
import datetime
import re
import sys

from loguru import logger

from strife.core.untrusted import escape

COLOURS = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96]
COLOUR_CODE = re.compile(r"(\x1b\[[0-9;]*m)")  # SGR only: colours and bold, nothing that moves


class Printer:
    def __init__(self, stream=None, colour=None, width=10):
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
        self.width = width
        self._colours = {}

    def line(self, name, text):
        """Something `name` (the supervisor) says now: stamped with the time."""
        now = datetime.datetime.now()
        stamp = f"{now:%H:%M:%S}.{now.microsecond // 1000:03d}"
        self.relay(name, f"\033[32m{stamp}\033[0m {text}")

    def relay(self, name, text):
        """A line that carries its own time (a node's), prefixed with the name. Colour codes in it
        are kept on a colour terminal and dropped elsewhere; anything else invisible is escaped."""
        prefix = f"{name:<{self.width}} |"
        if self.colour:
            code = self._colours.setdefault(name, COLOURS[len(self._colours) % len(COLOURS)])
            prefix = f"\033[{code}m{prefix}\033[0m"
        self.stream.write(f"{prefix} {self._shown(text.rstrip())}\n")
        self.stream.flush()

    def _shown(self, text):
        if "\x1b" not in text:
            return escape(text, backslash=False)
        parts = COLOUR_CODE.split(text)  # odd indexes: the colour codes
        return "".join(part if i % 2 else escape(part, backslash=False)
                       for i, part in enumerate(parts) if self.colour or not i % 2)


class LogPrinter:
    """The detached supervisor's lines as records of its log (strife/core/log_setup.py configures it):
    logs/supervisor.log, with the nodes' format, rotation and retention."""

    def line(self, name, text):
        logger.bind(logger=name).info(text)

    relay = line
