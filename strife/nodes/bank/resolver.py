"""In-doubt resolution: a hold PREPARED longer than hold_timeout is settled from etcd's decision
record; with no decision yet, the bank records ABORT itself (create-if-absent) and releases it."""
import asyncio
import logging
import time

from strife import decisions
from strife.untrusted import field

log = logging.getLogger(__name__)


async def resolve_once(ledger, etcd, hold_timeout):
    """Settle every hold older than hold_timeout; returns {txn_id: outcome applied}."""
    settled = {}
    for txn_id in ledger.in_doubt(older_than=time.time() - hold_timeout):
        decision = await decisions.decide(etcd, txn_id, decisions.ABORT)
        settled[txn_id] = await (ledger.commit(txn_id) if decision == decisions.COMMIT else ledger.abort(txn_id))
        log.info("in-doubt %s resolved from etcd: %s", field(txn_id), settled[txn_id])
    return settled


async def run(ledger, etcd, hold_timeout):
    """Forever: once at start-up (holds a crash left behind), then every quarter of hold_timeout."""
    interval = max(0.2, hold_timeout / 4)
    while True:
        try:
            await resolve_once(ledger, etcd, hold_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # etcd away: the holds wait; nothing is guessed
            log.warning("in-doubt resolution postponed: %s", exc)
        await asyncio.sleep(interval)
