"""The gateway's observation hooks: one call where a step of a payment ends (the coordinator
calls them), each writing the step to the timeline and counting it in the metrics."""
from __future__ import annotations

import time
from typing import Any

from strife.core.outcomes import Outcome
from strife.observe import metrics, timeline
from strife.rpc import gw_bank_pb2

FINAL = (Outcome.COMMITTED, Outcome.ABORTED)


def received(payment) -> None:
    timeline.record(payment.txn_id, "received", payer=payment.payer, payee=payment.payee,
                    amount_minor=payment.amount_minor, banks=[payment.payer_bank, payment.payee_bank])


def answered(payment, result, began):
    """The answer this execution gives (returned unchanged), begun at `began` (perf_counter):
    counted once it is definite; the `gateway` stage is the whole time to it."""
    if result.outcome in FINAL:
        metrics.PAYMENTS.labels(result.outcome.value, result.reason.value).inc()
        metrics.STAGE_SECONDS.labels("gateway").observe(time.perf_counter() - began)
    for stage, seconds in (result.stages or {}).items():
        metrics.STAGE_SECONDS.labels(stage).observe(seconds)
    timeline.record(payment.txn_id, "reply", outcome=result.outcome.value, reason=result.reason.value,
                    detail=result.detail)
    return result


def replayed(payment, result, source):
    """An answer given again (returned unchanged), not by an execution of its own: from the
    gateway's store, from the execution already in flight, or from the answer another gateway
    recorded in etcd. Counted in the metrics once, where it was first given."""
    timeline.record(payment.txn_id, "reply", outcome=result.outcome.value, reason=result.reason.value,
                    detail=result.detail, source=source)
    return result


def vote(answer) -> dict:
    yes, reason, detail = answer
    return {"vote": "YES" if yes else "NO", **({} if yes else {"reason": str(reason), "detail": detail})}


def prepare(work, txn_id, bank):
    return timeline.timed(work, txn_id, "prepare", vote, bank=bank)


def transfer(work, txn_id, bank):
    return timeline.timed(work, txn_id, "transfer", lambda r: {"outcome": gw_bank_pb2.TxnState.Name(r.state)},
                          bank=bank)


def decided(txn_id, seconds, wanted, standing) -> None:
    """The decision in etcd took `seconds`; `standing` is what was recorded first (maybe not ours)."""
    timeline.record(txn_id, "decision", time.time() - seconds, proposed=wanted, decision=standing.outcome)


def phase2(work, txn_id, bank, decision, attempt):
    if attempt > 1:
        metrics.PHASE2_RETRIES.labels(bank).inc()
    return timeline.timed(work, txn_id, "phase2", lambda ok: {"acked": ok}, bank=bank, decision=decision,
                          attempt=attempt)


def phase2_done(txn_id, started) -> None:
    metrics.STAGE_SECONDS.labels("phase2").observe(time.time() - started)
    timeline.record(txn_id, "phase2-done", started)


def recovered(payment, decision, answer=None) -> None:
    """The recovery pass drives `payment`; `answer` when it gave the payment its definite answer."""
    metrics.RECOVERED.labels(decision).inc()
    if answer is not None and answer["outcome"] in FINAL:
        metrics.PAYMENTS.labels(str(answer["outcome"]), str(answer["reason"])).inc()
    fields: dict[str, Any] = {"by": "gateway recovery pass", "decision": decision}
    if answer is not None:
        fields.update(outcome=str(answer["outcome"]), reason=str(answer["reason"]))
    timeline.record(payment.txn_id, "recovery", **fields)
