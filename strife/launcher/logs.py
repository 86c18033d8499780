"""Reading nodes' log files: the last lines, and following them as they grow."""
import time


def tail(path, lines):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return data.splitlines()[-lines:] if lines else []


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
                emit(name, line)
        time.sleep(poll)
