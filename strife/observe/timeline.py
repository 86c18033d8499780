"""Each node's part of every payment's timeline: one JSON object per line in
logs/<node>.trace.jsonl, rotated like the node's log (settings.log_max_bytes, log_keep), merged
by `strife trace` (strife/observe/traces.py).

Decision: structured records keyed by transaction id, not OpenTelemetry spans. The transaction id
already travels on every hop (client -> gateway -> banks -> etcd), so it is the correlation key
without any context in gRPC metadata. The parts that matter most have no parent to inherit a
context from: a bank's in-doubt resolver, a gateway's recovery pass after a crash, phase 2 sent
again minutes later, another gateway finishing the payment; and the gateway batches many payments
into one bank call, which a span per RPC would not separate. The records are spans all the same
(start and duration). Written to a file opened O_APPEND, the records of FLUSH_EVERY seconds in
one write(2) (a write per record cost the gateway 0.1-0.9 ms of CPU per payment with tracing on in
`strife bench`, and one per turn of the event loop still a few percent: each write(2) releases the
GIL, and gRPC's threads take it, so the loop waits to get it back). A crash loses at most the
records of that moment: a node's own events (a failpoint, which may be `crash`; a start; a switch)
are written at once, with whatever was waiting, and the rest at exit. Not the standard library's
RotatingFileHandler: a record cost 95 us of CPU with it (a seek and a flush each time, and
logging's machinery) and 22 us with a plain write per record, on the same loaded machine;
rotation is the same scheme (<file>.1 .. .N, by size).

A record: {"t": start (unix seconds), "ms": duration, "node", "txn" (null for the node's own
events: start, failpoints), "step", and the step's fields (bank, vote, outcome, attempt, ...)}.
Sampling (settings.trace_sample < 1) keeps a payment on every node or on none: the choice is a
hash of its id.

Switched off and on by the operator (`switch`; a node does it on SIGUSR1 and SIGUSR2, see
node_hooks.py): how `strife bench` measures what tracing costs, on the same deployment in one run.
Not a request field: no user can stop a node tracing. A "tracing" record marks each switch, so
a gap in a timeline says why. The switch costs a payment nothing: `traced` looks at one global
either way.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

class RotatingFile:
    """Appends lines, one write(2) each; past `max_bytes` the file becomes <file>.1 (and .1 .2,
    ... up to `keep` rotated files) and a new one is started."""

    def __init__(self, path, max_bytes: int, keep: int):
        self.path, self.max_bytes, self.keep = str(path), max_bytes, keep
        self._lock = threading.Lock()  # the metrics server's thread never writes, but be safe
        self._open()

    def _open(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, line: str) -> None:
        data = line.encode("utf-8", errors="replace")  # ensure_ascii: any text is ASCII by now
        with self._lock:
            if self.size and self.size + len(data) > self.max_bytes:
                self._rotate()
            os.write(self.fd, data)
            self.size += len(data)

    def _rotate(self):
        os.close(self.fd)
        for i in range(self.keep, 0, -1):  # .N-1 -> .N (the oldest replaced), ..., the file -> .1
            newer = f"{self.path}.{i - 1}" if i > 1 else self.path
            if os.path.exists(newer):
                os.replace(newer, f"{self.path}.{i}")
        if self.keep == 0:
            os.unlink(self.path)
        self._open()

    def close(self):
        os.close(self.fd)


_file: RotatingFile | None = None  # until configure(): a command or a test that imports a node module writes nothing
_active: RotatingFile | None = None  # _file while tracing is on; None while the operator switched it off
_node = ""
_keep_below = 10_000       # of 10,000 hash buckets: all
# one encoder for every record: json.dumps with options builds a new one per call (half its cost)
_encode = json.JSONEncoder(default=str, separators=(",", ":"), check_circular=False).encode


def configure(path, node: str, settings) -> None:
    """This process writes its timeline records to `path` from now on."""
    global _file, _active, _node, _keep_below
    if _file is not None:
        flush()
        _file.close()
    _node = node
    _keep_below = round(getattr(settings, "trace_sample", 1.0) * 10_000)
    _file = _active = RotatingFile(path, settings.log_max_bytes, settings.log_keep) if _keep_below > 0 else None


def close() -> None:
    """Write what waits and stop recording (a command that recorded while it sent for a client)."""
    global _file, _active
    flush()
    if _file is not None:
        _file.close()
    _file = _active = None


def switch(on: bool) -> None:
    """Tracing on or off in this process (nothing when it has no timeline: trace_sample 0)."""
    global _active
    if _file is None or (_active is not None) == on:
        return
    if on:
        _active = _file
        node_event("tracing", on=True)
    else:
        node_event("tracing", on=False)
        _active = None


def tracing() -> bool:
    return _active is not None


def traced(txn: str | None) -> bool:
    if _active is None:
        return False
    return txn is None or _keep_below >= 10_000 or zlib.crc32(txn.encode()) % 10_000 < _keep_below


_string = json.encoder.encode_basestring_ascii  # a JSON string literal, in C (ASCII, as json.dumps)


def _json(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:
        return str(value)
    if (kind is list or kind is tuple) and all(type(item) is str for item in value):  # e.g. the banks
        return "[" + ",".join(map(_string, value)) + "]"
    return _encode(value)


def record(txn: str | None, step: str, start: float | None = None, end: float | None = None, /,
           **fields: Any) -> None:
    """One step of `txn` (None: an event of this node), begun at `start` (unix seconds; default
    now) and ended at `end` (default now)."""
    if not traced(txn):
        return
    now = time.time() if end is None else end
    begun = now if start is None else start
    # the line built directly (a dozen per payment): json.dumps of the same dict costs three times more
    line = (f'{{"t":{begun:.6f},"ms":{(now - begun) * 1000:.3f},"node":{_string(_node)},'
            f'"txn":{"null" if txn is None else _string(txn)},"step":{_string(step)}')
    for key, value in fields.items():
        line += f",{_string(key)}:{_json(value)}"
    _write(line + "}\n")


def node_event(step: str, **fields: Any) -> None:
    record(None, step, **fields)
    flush()


FLUSH_EVERY = 0.1   # seconds: how long a record may wait to be written with others
FLUSH_LINES = 500   # ... unless this many are waiting (a burst)
_waiting: list[str] = []  # lines written together by flush()


def _write(line: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on the event loop (a thread, a command): now
        _write_now(line)
        return
    if not _waiting:
        loop.call_later(FLUSH_EVERY, flush)
    _waiting.append(line)
    if len(_waiting) >= FLUSH_LINES:
        flush()  # the timer then finds nothing waiting, or the next burst's first lines


def flush() -> None:
    """Write the lines waiting."""
    if _waiting:
        lines = "".join(_waiting)
        _waiting.clear()
        _write_now(lines)


def _write_now(lines: str) -> None:
    if _file is None:
        return
    try:
        _file.write(lines)
    except OSError:  # a full disk: the node's health says so (strife/nodes/health.py); payments go on
        pass


atexit.register(flush)  # what the last turn of the loop wrote, when the process ends


async def timed(work: Awaitable[T], txn: str, step: str, describe: Callable[[T], dict] | None = None,
                **fields: Any) -> T:
    """Await `work` and record it as a step of `txn`; `describe(result)` adds fields from its result.
    An exception is recorded as the step's error, then raised."""
    if not traced(txn):
        return await work
    start = time.time()
    try:
        result = await work
    except BaseException as exc:
        record(txn, step, start, error=type(exc).__name__, **fields)
        raise
    try:
        fields.update(describe(result) if describe else {})
    except Exception as exc:  # noqa: BLE001 (a record is never worth a payment)
        fields["describe_error"] = repr(exc)
    record(txn, step, start, **fields)
    return result
