"""The client's observation hooks: each payment's wait in the outbox and every send attempt."""
from __future__ import annotations

from strife.observe import metrics, timeline


def sent(after, before, began, client):
    """One attempt at `before` (the entry as it was) ended; `after` is the entry now (returned)."""
    if before.attempts == 0:  # the first attempt: the payment waited in the outbox until now
        timeline.record(before.txn_id, "queued", before.created_at, began, payee=before.payee,
                        amount_minor=before.amount_minor)
    result = "gone" if after is None else after.status.lower() if not after.pending else "retry"
    if client:
        metrics.SEND_ATTEMPTS.labels(client, result).inc()
    fields = {"attempt": before.attempts + 1, "result": result}
    if after is not None and after.pending and after.last_error:
        fields["error"] = after.last_error
    timeline.record(before.txn_id, "send", began, **fields)
    return after


def watch_outbox(outbox, client) -> None:
    metrics.sample(lambda: metrics.OUTBOX_DEPTH.labels(client).set(len(outbox.pending())))
