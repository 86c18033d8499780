"""Reading logs: the last lines and following them as they grow, across rotated files, several
logs merged in time order.

loguru rotates logs/bank1.log by renaming it logs/bank1.<its creation time>.log and starting a
new one (strife/core/log_setup.py): looking back spans those files, following moves on to the new one.
Lines are ordered by the time they carry (Strife's text and JSON records, etcd's JSON); a line
without one (a traceback written before logging began) keeps its place after the line before it.
A line is shown with its control characters escaped: a file written by a process that does not
escape (etcd), or before log lines were escaped, cannot replay them onto the terminal.
"""
import datetime
import functools
import glob
import heapq
import os
import pathlib
import re
import time

from strife.core.untrusted import escape

ROTATED = re.compile(r"\.(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6})(?:\.(\d+))?\.log")  # after the stem
TEXT_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
JSON_TIME = re.compile(r'"(?:time|ts)": ?"([^"]+)"')
GO_TIME = re.compile(r"(?:[A-Z]+: )?(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)")  # etcd's gRPC lines, local time
BLOCK = 64 * 1024


def rotated(path):
    """The files `path` was rotated into, oldest first."""
    found = []
    for candidate in glob.glob(f"{glob.escape(str(path.with_suffix('')))}.*.log"):
        name = os.path.basename(candidate)[len(path.stem):]
        match = ROTATED.fullmatch(name)
        if match:
            found.append((match.group(1), int(match.group(2) or 1), candidate))
    return [pathlib.Path(candidate) for *_, candidate in sorted(found)]


def line_time(line):
    """Seconds since the epoch of the time a log line starts with (or its JSON time), else None."""
    match = TEXT_TIME.match(line)
    if match:
        second = _local_second(match.group(1))
        return None if second is None else second + int(match.group(2)) / 1000
    if line.startswith("{"):
        match = JSON_TIME.search(line)
        if match:
            try:
                return datetime.datetime.fromisoformat(match.group(1)).timestamp()
            except (ValueError, OverflowError):
                return None
    match = GO_TIME.match(line)
    if match:
        return _local_second(match.group(1).replace("/", "-"))
    return None


@functools.lru_cache(maxsize=4096)
def _local_second(text):
    """'2026-11-26 01:16:34' in local time, in seconds since the epoch (None if no such time)."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def last_lines(path_or_file, count, end=None):
    """The last `count` lines of a file (a path, or an open binary file, read up to byte `end`),
    oldest first, as bytes."""
    if count <= 0:
        return []
    try:
        f = open(path_or_file, "rb") if isinstance(path_or_file, (str, os.PathLike)) else path_or_file
    except FileNotFoundError:  # removed by retention meanwhile
        return []
    kept = f.tell()
    try:
        position = f.seek(0, 2) if end is None else end
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(BLOCK, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
    finally:
        if f is path_or_file:
            f.seek(kept)
        else:
            f.close()
    lines = data.split(b"\n")
    if position > 0:
        lines = lines[1:]  # cut by the block: the rest of a line read further back
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[-count:]


class Log:
    """One log, opened where following starts: its current file, at the end of its last
    complete line. `tail` looks back from there; `new_lines` reads on, through rotations."""

    def __init__(self, name, path):
        self.name, self.path = name, path
        self._file = None
        self._pending = b""
        self._last_time = float("-inf")
        self._start = self._open()

    def _open(self, at_end=True):
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            self._file = None
            return 0
        self._pending = b""
        if not at_end:
            return 0
        size = self._file.seek(0, 2)
        complete = size - len(self._partial(size))  # an unfinished line is read once complete
        self._file.seek(complete)
        return complete

    def _partial(self, size):
        """The bytes after the file's last newline (none when it ends with one)."""
        assert self._file is not None
        start = max(0, size - BLOCK)
        self._file.seek(start)
        return self._file.read(size - start).rsplit(b"\n", 1)[-1]

    def tail(self, count):
        """(time, line) of the last `count` lines before following starts, oldest first."""
        lines = last_lines(self._file, count, self._start) if self._file else []
        for older in reversed(rotated(self.path)):
            if len(lines) >= count:
                break
            lines = last_lines(older, count - len(lines)) + lines
        return self._timed(lines)

    def new_lines(self):
        """(time, line) of every line completed since the last call."""
        if self._file is None:
            self._open(at_end=False)
            if self._file is None:
                return []
        data = self._pending + self._read()
        if self._replaced():  # rotated: the rest of the old file, any rotated since, the new one
            data = _finished(data + self._read())
            old = os.fstat(self._file.fileno())
            self._file.close()
            self._open(at_end=False)
            new = os.fstat(self._file.fileno()) if self._file else None
            for between in self._rotated_after(old, new):
                try:
                    data += _finished(between.read_bytes())
                except FileNotFoundError:  # removed by retention meanwhile: those lines are gone
                    continue
            if self._file:
                data += self._read()
        *lines, self._pending = data.split(b"\n")
        return self._timed(lines)

    def _rotated_after(self, old, new):
        """The files rotated after the one we were reading (`old`, stat) and before `new`: those
        after it in rotation order. By mtime only when it is gone (removed by retention): two
        rotations in one tick of the clock share an mtime, and the earlier was read already."""
        found = []
        for path in rotated(self.path):
            try:
                found.append((path, path.stat()))
            except FileNotFoundError:
                continue
        at = next((i for i, (_, info) in enumerate(found) if _same(info, old)), None)
        after = found[at + 1:] if at is not None else [(p, i) for p, i in found if i.st_mtime_ns >= old.st_mtime_ns]
        return [path for path, info in after if not _same(info, new)]

    def _read(self):
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size < self._file.tell():  # truncated: start over
            self._file.seek(0)
        return self._file.read()

    def _replaced(self):
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False  # between a rotation's rename and the new file: look again next time
        assert self._file is not None
        mine = os.fstat(self._file.fileno())
        return (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino)

    def _timed(self, raw_lines):
        out = []
        for raw in raw_lines:
            line = escape(raw.decode(errors="replace"), backslash=False)
            when = line_time(line)
            if when is None:
                when = self._last_time
            self._last_time = when
            out.append((when, line))
        return out

    def close(self):
        if self._file:
            self._file.close()
            self._file = None


def _finished(data):
    """A finished file's bytes: its last line is complete even without a newline."""
    return data + b"\n" if data and not data.endswith(b"\n") else data


def _same(a, b):
    return b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def merged_tail(logs, count):
    """(name, line) of the last `count` lines of each log, all in time order."""
    per_log = [[(when, log.name, line) for when, line in log.tail(count)] for log in logs]
    for _, name, line in heapq.merge(*per_log, key=lambda item: item[0]):
        yield name, line


def follow(logs, emit, poll=0.2, stop=lambda: False):
    """Call emit(name, line) for every line appended to any of `logs`, in time order per poll."""
    while not stop():
        batch = [(when, log.name, line) for log in logs for when, line in log.new_lines()]
        batch.sort(key=lambda item: item[0])  # stable: one log's lines keep their order
        for _, name, line in batch:
            emit(name, line)
        time.sleep(poll)


def tail(path, lines):
    """The last `lines` lines of one log, across its rotations (what `up -d` shows on failure)."""
    log = Log(path.stem, path)
    try:
        return [line for _, line in log.tail(lines)]
    finally:
        log.close()
