"""Each node's part of every payment's timeline: one JSON object per line in
logs/<node>.trace.jsonl, rotated like the node's log (settings.log_max_bytes, log_keep), merged
by `strife trace` (strife/observe/traces.py).

Decision: structured records keyed by transaction id, not OpenTelemetry spans. The transaction id
already travels on every hop (client -> gateway -> banks -> etcd), so it is the correlation key
without any context in gRPC metadata. The parts that matter most have no parent to inherit a
context from: a bank's in-doubt resolver, a gateway's recovery pass after a crash, phase 2 sent
again minutes later, another gateway finishing the payment; and the gateway batches many payments
into one bank call, which a span per RPC would not separate. The records are spans all the same
(start and duration), written with the standard library's RotatingFileHandler: one write and
flush per record, so what a node wrote before a crash is on disk.

A record: {"t": start (unix seconds), "ms": duration, "node", "txn" (null for the node's own
events: start, failpoints), "step", and the step's fields (bank, vote, outcome, attempt, ...)}.
Sampling (settings.trace_sample < 1) keeps a payment on every node or on none: the choice is a
hash of its id.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_logger = logging.getLogger("strife.timeline")
_logger.propagate = False  # never into the node's own log
_logger.disabled = True    # until configure(): a command or a test that imports a node module writes nothing
_node = ""
_keep_below = 10_000       # of 10,000 hash buckets: all


def file_of(layout, node: str):
    return layout.logs / f"{node}.trace.jsonl"


def configure(path, node: str, settings) -> None:
    """This process writes its timeline records to `path` from now on."""
    global _node, _keep_below
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=settings.log_max_bytes,
                                                   backupCount=settings.log_keep, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in list(_logger.handlers):
        _logger.removeHandler(old)
        old.close()
    _logger.addHandler(handler)
    _logger.setLevel(logging.INFO)
    _node = node
    _keep_below = round(getattr(settings, "trace_sample", 1.0) * 10_000)
    _logger.disabled = _keep_below <= 0


def traced(txn: str | None) -> bool:
    if _logger.disabled:
        return False
    return txn is None or _keep_below >= 10_000 or zlib.crc32(txn.encode()) % 10_000 < _keep_below


def record(txn: str | None, step: str, start: float | None = None, end: float | None = None, /,
           **fields: Any) -> None:
    """One step of `txn` (None: an event of this node), begun at `start` (unix seconds; default
    now) and ended at `end` (default now)."""
    if not traced(txn):
        return
    now = time.time() if end is None else end
    begun = now if start is None else start
    entry = {"t": round(begun, 6), "ms": round((now - begun) * 1000, 3), "node": _node, "txn": txn,
             "step": step}
    entry.update(fields)
    _logger.info(json.dumps(entry, default=str, separators=(",", ":")))


def node_event(step: str, **fields: Any) -> None:
    record(None, step, **fields)


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
