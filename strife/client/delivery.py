"""Delivering an outbox to the gateway: the one loop the client node and the CLI both run.

Oldest first, one at a time, always with the payment's own id. A definite answer (committed,
aborted, or a request the gateway refuses outright) settles a row; anything else (the gateway
unreachable, busy, still deciding, or the sender's credentials refused: the payment is not at
fault) is retried after an exponential backoff with jitter, its reason kept in the row. One sender
per client at a time, held by an exclusive lock file: the client node for its whole life, else a
CLI command for its length. The node delivers forever; the CLI until its own payment is settled,
an attempt has failed, or its --wait ends.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from strife.core.money import format_minor
from strife.core.outcomes import AbortReason, Outcome, Refusal, refusal
from strife.core.untrusted import field
from strife.observe import client_steps as observe

if TYPE_CHECKING:
    from strife.client.gateway_client import GatewayClient
    from strife.client.outbox import Entry, Outbox
    from strife.core.failpoints import Failpoints

log = logging.getLogger(__name__)

BASE_DELAY, MAX_DELAY = 0.2, 10.0
ATTEMPT_TIMEOUT = 3.0
MIN_ATTEMPT = 0.5    # seconds: an attempt gets at least this long, even right before a deadline
IDLE_LOOK = 1.0      # seconds: an idle sender looks at its outbox at least this often


class SenderLock:
    """Exclusive, released by the kernel if the holder dies (even by SIGKILL)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a")

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()

    @classmethod
    @contextlib.contextmanager
    def held(cls, path: Path) -> Iterator[bool]:
        """Whether this process is the sender for the length of the block (False: someone else is)."""
        lock = cls(path)
        try:
            yield lock.try_acquire()
        finally:
            lock.release()


def backoff(attempts: int) -> float:
    """Exponential with full jitter around it, so many clients do not retry in step."""
    return min(MAX_DELAY, BASE_DELAY * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.5)


def describe(entry: Entry) -> str:
    return f"payment {field(entry.txn_id)} to {field(entry.payee)} {format_minor(entry.amount_minor)}"


async def attempt(outbox: Outbox, client: GatewayClient, failpoints: Failpoints | None = None,
                  timeout: float = ATTEMPT_TIMEOUT) -> Entry | None:
    """Try to settle the oldest pending payment once. Returns the entry after the attempt, or None
    when nothing is pending or the head must wait for its next attempt time."""
    entry = outbox.head()
    if entry is None or entry.next_attempt_at > time.time():
        return None
    outbox.sending(entry.txn_id)
    began = time.time()
    if failpoints:
        await failpoints.hit("send")
    try:
        answer = await client.pay(entry.payee, entry.amount_minor, entry.txn_id, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        why = refusal(exc.code())
        if why is Refusal.CREDENTIALS:
            # Who sends is not accepted (a password changed under a running node, a certificate
            # renewed): the payment itself is fine, so it waits, saying why, and goes once they are.
            error = f"refused for credentials: {exc.details() or exc.code().name}"
            outbox.retry_later(entry.txn_id, error, time.time() + backoff(entry.attempts + 1))
            log.warning("%s: %s; kept queued", describe(entry), field(error))
        elif why.final:
            outbox.settle(entry.txn_id, Outcome.REJECTED, detail=exc.details() or exc.code().name)
            log.info("%s: rejected by the gateway: %s", describe(entry), field(exc.details()))
        else:
            error = f"{exc.code().name.lower()}: {exc.details() or ''}".strip()
            outbox.retry_later(entry.txn_id, error, time.time() + backoff(entry.attempts + 1))
            log.info("%s: gateway not reachable (%s); will retry with the same id", describe(entry), field(error))
        return observe.sent(outbox.get(entry.txn_id), entry, began, getattr(client, "user", ""))
    if failpoints:
        await failpoints.hit("after-send")  # the gateway answered; the outbox does not know yet
    outcome, reason = Outcome.of_number(answer.outcome), AbortReason.of_number(answer.reason)
    if outcome is Outcome.COMMITTED:
        outbox.settle(entry.txn_id, outcome)
        log.info("%s: committed", describe(entry))
    elif outcome is Outcome.ABORTED:
        outbox.settle(entry.txn_id, outcome, reason, answer.detail)
        log.info("%s: aborted (%s) %s", describe(entry), reason, field(answer.detail))
    else:
        outbox.retry_later(entry.txn_id, f"in progress: {answer.detail}", time.time() + backoff(entry.attempts + 1))
    return observe.sent(outbox.get(entry.txn_id), entry, began, getattr(client, "user", ""))


Until = Callable[["Entry | None"], bool]


def forever(attempted: Entry | None) -> bool:
    return False


def until_idle_or_failed(attempted: Entry | None) -> bool:
    """Stop once nothing can be sent now, or an attempt failed (the gateway is not answering)."""
    return attempted is None or attempted.pending


def until_settled_or_failed(outbox: Outbox, txn_id: str) -> Until:
    """Stop once `txn_id` is settled, or an attempt failed."""
    def stop(attempted: Entry | None) -> bool:
        mine = outbox.get(txn_id)
        return mine is None or not mine.pending or (attempted is not None and attempted.pending)
    return stop


async def deliver(outbox: Outbox, client: GatewayClient, until: Until = forever, deadline: float | None = None,
                  failpoints: Failpoints | None = None,
                  on_settled: Callable[[Entry], None] | None = None) -> None:
    """The delivery loop: attempt the head, again and again, until `until(what the last attempt
    returned)` says stop or the `deadline` (monotonic) passes. When nothing can be sent now it waits
    for the head's next attempt time, or for the outbox to change (a payment queued by a CLI)."""
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        timeout = ATTEMPT_TIMEOUT if left is None else min(ATTEMPT_TIMEOUT, max(MIN_ATTEMPT, left))
        attempted = await attempt(outbox, client, failpoints, timeout)
        if attempted is not None and not attempted.pending and on_settled is not None:
            on_settled(attempted)
        if until(attempted):
            return
        if attempted is None:
            seen = outbox.version()
            head = outbox.head()
            wait = IDLE_LOOK if head is None else min(IDLE_LOOK, max(0.0, head.next_attempt_at - time.time()))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            await outbox.changed(within=wait, since=seen)


async def await_outcome(outbox: Outbox, entry: Entry, deadline: float) -> Entry:
    """While another process (the client node) delivers: `entry` once it is settled, once an
    attempt at it has failed, or as it stands at the deadline (monotonic)."""
    tried = entry.attempts
    outbox.listen()  # before the first read: a ring from the node in between waits in the socket
    while (left := deadline - time.monotonic()) > 0:
        seen = outbox.version()
        current = outbox.get(entry.txn_id)
        if current is None:
            return entry
        entry = current
        if not entry.pending or (entry.status == "QUEUED" and entry.attempts > tried and entry.last_error):
            return entry
        await outbox.changed(within=left, since=seen)
    return outbox.get(entry.txn_id) or entry
