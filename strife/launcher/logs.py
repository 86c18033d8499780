"""Reading nodes' log files: the last lines, and following them as they grow.

A line is shown with its control characters escaped: a file written before log lines were
escaped (or by a process that does not escape, like etcd) cannot replay them onto the terminal.
"""
import time

from strife.untrusted import escape


def tail(path, lines):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    if not lines or not data:
        return []
    # "\n" only: splitlines() would also cut at \r, \x0b, \x85 or \u2028 written into a line
    return [escape(line, backslash=False) for line in data.removesuffix("\n").split("\n")[-lines:]]


def follow(paths, emit, poll=0.2, stop=lambda: False):
    """Call emit(name, line) for every line appended to any of `paths` ({name: path})."""
    offsets = {}
    for name, path in paths.items():
        try:
            offsets[name] = path.stat().st_size
        except FileNotFoundError:
            offsets[name] = 0
    partial = dict.fromkeys(paths, "")
    while not stop():
        for name, path in paths.items():
            try:
                with open(path, "rb") as f:
                    if f.seek(0, 2) < offsets[name]:
                        offsets[name] = 0  # truncated or recreated
                    f.seek(offsets[name])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            offsets[name] += len(chunk)
            text = partial[name] + chunk.decode(errors="replace")
            *complete, partial[name] = text.split("\n")
            for line in complete:
                emit(name, escape(line, backslash=False))
        time.sleep(poll)
