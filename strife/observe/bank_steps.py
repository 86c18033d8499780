"""The bank's observation hooks: its steps of each payment in the timeline, its holds as gauges."""
from __future__ import annotations

import time

from strife.observe import metrics, timeline


def prepared(legs, votes, began, directions) -> None:
    for leg, (vote, reason, detail) in zip(legs, votes):
        timeline.record(leg.txn_id, "hold", began, account=leg.account, direction=directions[leg.direction],
                        amount_minor=leg.amount_minor, vote=str(vote),
                        **({"reason": str(reason), "detail": detail} if detail else {}))


def decided(step, txn_ids, outcomes, began) -> None:
    for txn_id, outcome in zip(txn_ids, outcomes):
        shown = {"error": str(outcome)} if isinstance(outcome, BaseException) else {"outcome": str(outcome)}
        timeline.record(txn_id, step, began, **shown)


def transferred(transfers, answers, began) -> None:
    for t, (outcome, reason, detail) in zip(transfers, answers):
        timeline.record(t.txn_id, "transfer", began, payer=t.payer, payee=t.payee, outcome=str(outcome),
                        **({"reason": str(reason), "detail": detail} if detail else {}))


def resolved(txn_id, outcome, by) -> None:
    """The bank settled a hold itself from the decision in etcd (or its own ABORT there)."""
    metrics.RESOLVED.labels(str(outcome)).inc()
    timeline.record(txn_id, "resolved", by=by, outcome=str(outcome))


def watch_holds(ledger, prepare_timeout) -> None:
    def look():
        now = time.time()
        metrics.HOLDS_PREPARED.set(len(ledger.in_doubt(older_than=now + 1)))
        metrics.HOLDS_IN_DOUBT.set(len(ledger.in_doubt(older_than=now - prepare_timeout)))
    metrics.sample(look)
