"""Delivering the outbox to the gateway: oldest first, one at a time, always with the payment's own id.

A definite answer (committed, aborted, or a request the gateway refuses outright) settles a row;
anything else (gateway unreachable, overloaded, still in progress) is retried with exponential
backoff and jitter. Only one sender per client at a time, held by an exclusive lock file: the
client node while it runs, else the CLI.
"""
import fcntl
import logging
import random
import time

import grpc

from strife.core.money import format_minor
from strife.core.untrusted import field
from strife.rpc import cl_gw_pb2 as cl

log = logging.getLogger(__name__)

BASE_DELAY, MAX_DELAY = 0.2, 10.0
ATTEMPT_TIMEOUT = 3.0
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION}


class SenderLock:
    """Exclusive, released by the kernel if the holder dies (even by SIGKILL)."""

    def __init__(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a")

    def try_acquire(self):
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def backoff(attempts):
    """Exponential with full jitter around it, so many clients do not retry in step."""
    return min(MAX_DELAY, BASE_DELAY * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.5)


def describe(entry):
    return f"payment {field(entry.txn_id)} to {field(entry.payee)} {format_minor(entry.amount_minor)}"


async def send_head(outbox, client, failpoints=None, timeout=ATTEMPT_TIMEOUT):
    """Try to settle the oldest pending payment once. Returns the entry after the attempt, or None
    when nothing is pending or the head must wait for its next attempt time."""
    entry = outbox.head()
    if entry is None or entry.next_attempt_at > time.time():
        return None
    outbox.sending(entry.txn_id)
    if failpoints:
        await failpoints.hit("send")
    try:
        answer = await client.pay(entry.payee, entry.amount_minor, entry.txn_id, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in REFUSALS:
            outbox.settle(entry.txn_id, "ABORTED", "REJECTED", exc.details() or exc.code().name)
            log.info("%s: rejected by the gateway: %s", describe(entry), field(exc.details()))
        else:
            error = f"{exc.code().name.lower()}: {exc.details() or ''}".strip()
            outbox.retry_later(entry.txn_id, error, time.time() + backoff(entry.attempts + 1))
            log.info("%s: gateway not reachable (%s); will retry with the same id", describe(entry), field(error))
        return outbox.get(entry.txn_id)
    if failpoints:
        await failpoints.hit("after-send")  # the gateway answered; the outbox does not know yet
    if answer.outcome == cl.COMMITTED:
        outbox.settle(entry.txn_id, "COMMITTED")
        log.info("%s: committed", describe(entry))
    elif answer.outcome == cl.ABORTED:
        outbox.settle(entry.txn_id, "ABORTED", cl.AbortReason.Name(answer.reason), answer.detail)
        log.info("%s: aborted (%s) %s", describe(entry), cl.AbortReason.Name(answer.reason), field(answer.detail))
    else:
        outbox.retry_later(entry.txn_id, f"in progress: {answer.detail}", time.time() + backoff(entry.attempts + 1))
    return outbox.get(entry.txn_id)
