"""CPU time by process over one phase of a benchmark: where a payment's (or an echo's) CPU goes.

On a machine whose cores are full, throughput is total CPU per payment turned upside down, so
this is the figure to compare with the echo's CPU per call.
"""
import contextlib

import psutil

LOAD_GENERATOR = "load generator"


class CpuMeter:
    def __init__(self, processes):
        """`processes`: name -> pid; the benchmark's own process is added as the load generator."""
        self._procs = {name: psutil.Process(pid) for name, pid in processes.items()}
        self._procs[LOAD_GENERATOR] = psutil.Process()
        self._start = self._read()

    def _read(self):
        seconds = {}
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):  # a node restarted or gone: left out
                times = proc.cpu_times()
                seconds[name] = times.user + times.system
        return seconds

    def used(self):
        """CPU seconds by process since the meter started."""
        end = self._read()
        return {name: end[name] - self._start[name] for name in end if name in self._start}

    def per_item_ms(self, count):
        """CPU milliseconds per item (payment, echo) since the meter started, by process, plus a total."""
        return per_item_ms(self.used(), count)


def per_item_ms(used, count):
    """{process: CPU seconds} over `count` items -> ms per item by process (largest first), plus a total."""
    ms = {name: seconds * 1000 / max(count, 1) for name, seconds in used.items()}
    per_item = {name: round(value, 3) for name, value in sorted(ms.items(), key=lambda item: -item[1])}
    per_item["total"] = round(sum(ms.values()), 3)
    return per_item
