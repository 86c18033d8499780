"""In-doubt resolution: a hold PREPARED longer than hold_timeout is settled from etcd's decision
record; with no decision yet, the bank records its own ABORT (only while no decision exists, see
strife/core/decisions.py) and releases it."""
import asyncio
import logging
import time

from strife.core import decisions
from strife.core.untrusted import field
from strife.observe import bank_steps as observe

log = logging.getLogger(__name__)


async def resolve_once(ledger, etcd, bank, hold_timeout):
    """Settle every hold older than hold_timeout; returns {txn_id: outcome applied}."""
    settled = {}
    for txn_id in ledger.in_doubt(older_than=time.time() - hold_timeout):
        decision = await decisions.abort_as_bank(etcd, bank, txn_id)
        settled[txn_id] = await (ledger.commit(txn_id) if decision == decisions.COMMIT else ledger.abort(txn_id))
        log.info("in-doubt %s resolved from etcd: %s", field(txn_id), settled[txn_id])
        observe.resolved(txn_id, settled[txn_id], "bank resolver")
    return settled


async def settle_account(ledger, etcd, bank, account):
    """Before a read of `account`: apply every decided outcome of its PREPARED holds. The gateway
    answers a payment once its decision is in etcd, before phase 2 reaches the banks; a read that
    begins after the answer must show it, whichever gateway asks."""
    txn_ids = ledger.prepared_of(account)
    if not txn_ids:
        return
    for txn_id, outcome in (await decisions.read_many(etcd, txn_ids, bank)).items():
        if outcome == decisions.COMMIT:
            observe.resolved(txn_id, await ledger.commit(txn_id), "settled before a read")
        elif outcome == decisions.ABORT:
            observe.resolved(txn_id, await ledger.abort(txn_id), "settled before a read")


async def run(ledger, etcd, bank, hold_timeout):
    """Forever: once at start-up (holds a crash left behind), then every quarter of hold_timeout."""
    interval = max(0.2, hold_timeout / 4)
    while True:
        try:
            await resolve_once(ledger, etcd, bank, hold_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # etcd away: the holds wait; nothing is guessed
            log.warning("in-doubt resolution postponed: %s", exc)
        await asyncio.sleep(interval)
