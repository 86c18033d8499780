"""Name-prefixed, coloured output lines for the foreground launcher (after honcho's printer)."""
import datetime
import sys

COLOURS = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96]


class Printer:
    def __init__(self, stream=None, colour=None, width=10):
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
        self.width = width
        self._colours = {}

    def line(self, name, text):
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        prefix = f"{stamp} {name:<{self.width}} |"
        if self.colour:
            code = self._colours.setdefault(name, COLOURS[len(self._colours) % len(COLOURS)])
            prefix = f"\033[{code}m{prefix}\033[0m"
        self.stream.write(f"{prefix} {text.rstrip()}\n")
        self.stream.flush()
