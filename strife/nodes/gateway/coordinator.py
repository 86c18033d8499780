"""Two-phase commit, coordinator side.

1. Record the payment PENDING (the idempotency record) before anything is sent.
2. Prepare both sides in parallel under prepare_timeout; the first NO ends the wait.
3. Decide: COMMIT only if both voted YES, written to etcd create-if-absent; obey what stands.
4. Phase 2 to every bank that may hold something, retried until acknowledged.
5. Record the outcome. Anything a crash interrupts is driven again by `recover`.
"""
import asyncio
import logging

import grpc

from strife import decisions
from strife.batching import Batcher
from strife.nodes.gateway.banks import PhaseTwoRefused
from strife.rpc import cl_gw_pb2 as cl
from strife.rpc import gw_bank_pb2 as gb

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 5.0
_NO_REASONS = {gb.INSUFFICIENT_FUNDS: "INSUFFICIENT_FUNDS", gb.ACCOUNT_UNKNOWN: "ACCOUNT_UNKNOWN"}


class IdempotencyMismatch(Exception):
    """The transaction id was already used for a payment with other terms."""


class Result:
    __slots__ = ("txn_id", "outcome", "reason", "detail")

    def __init__(self, txn_id, outcome, reason="", detail=""):
        self.txn_id, self.outcome, self.reason, self.detail = txn_id, outcome, reason, detail

    @classmethod
    def of(cls, payment):
        return cls(payment.txn_id, payment.status, payment.reason, payment.detail)

    def to_proto(self):
        outcome = {"COMMITTED": cl.COMMITTED, "ABORTED": cl.ABORTED}.get(self.outcome, cl.IN_PROGRESS)
        return cl.InitiateTransactionResponse(txn_id=self.txn_id, outcome=outcome,
                                              reason=cl.AbortReason.Value(self.reason or "REASON_UNSPECIFIED"),
                                              detail=self.detail)


class Coordinator:
    def __init__(self, store, banks, etcd, settings, failpoints):
        self.store, self.banks, self.etcd = store, banks, etcd
        self.prepare_timeout = settings.prepare_timeout
        self.failpoints = failpoints
        self.inflight = {}     # txn_id -> (Task[Result], Payment): duplicates wait for one execution
        self.retrying = {}     # txn_id -> phase-2 retry task
        # decisions in flight together go to etcd in one transaction
        # (a COMMIT compares its key and both banks' abort keys: 40 stay under etcd's 128 compares)
        self.decider = Batcher(lambda items: decisions.decide_many(etcd, items), max_batch=40)

    async def pay(self, payment):
        running, known = self.inflight.get(payment.txn_id, (None, None))
        existing = self.store.payment(payment.txn_id) if running is None else None
        if running is not None or existing is not None:
            known = existing or known
            if known.fingerprint != payment.fingerprint:
                raise IdempotencyMismatch(f"transaction id {payment.txn_id} was already used for another payment")
            if running is not None:
                return await asyncio.shield(running)
            if existing.final:
                return Result.of(existing)
            return Result(payment.txn_id, "PENDING", detail="being recovered; ask again with the same id")
        # Claimed before the first await: a concurrent duplicate finds it and waits for this execution.
        # The execution is a task of its own: a caller that hangs up does not stop the protocol halfway.
        task = asyncio.ensure_future(self._begin_and_execute(payment))
        self.inflight[payment.txn_id] = (task, payment)
        task.add_done_callback(lambda t: self._done(payment.txn_id, t))
        return await asyncio.shield(task)

    def _done(self, txn_id, task):
        del self.inflight[txn_id]
        if not task.cancelled() and task.exception() is not None:  # seen here even if every caller left
            log.warning("payment %s stopped: %s", txn_id, task.exception())

    async def _begin_and_execute(self, payment):
        await self.store.begin(payment)
        return await self._execute(payment)

    async def _execute(self, payment):
        want, reason, detail, contacted, unreachable = await self._prepare_all(payment)
        await self.failpoints.hit("after-prepare")
        try:
            decision = await self.decider.submit((payment.txn_id, want, (payment.payer_bank, payment.payee_bank)))
        except Exception as exc:  # no decision recorded: banks and recovery will settle it
            log.warning("decision for %s not recorded: %s", payment.txn_id, exc)
            return Result(payment.txn_id, "PENDING", detail="the decision could not be recorded yet; "
                                                            "ask again with the same id")
        await self.failpoints.hit("after-decision")
        if decision != want:  # a bank's in-doubt resolver decided first
            reason, detail = "RECOVERED_ABORT", "aborted by in-doubt resolution before the gateway decided"
        status = "COMMITTED" if decision == decisions.COMMIT else "ABORTED"
        if status == "COMMITTED":
            reason, detail = "", ""
        await self.failpoints.hit("before-commit")
        # Banks that did not answer the prepare are told in the background: the reply does not wait on them.
        done = await self._phase2(payment.txn_id, decision, contacted - unreachable) and not unreachable
        await self.store.finish(payment, status, reason, detail, phase2_done=done)
        if not done:
            self._retry_phase2(payment.txn_id, decision, contacted)
        return Result.of(payment)

    async def _prepare_all(self, payment):
        """(COMMIT|ABORT, reason, detail, banks that may hold something, banks that did not answer)."""
        contacted, unreachable = set(), set()
        tasks = [asyncio.ensure_future(self._prepare(payment.txn_id, bank, direction, account,
                                                     payment.amount_minor, contacted, unreachable))
                 for bank, direction, account in payment.legs()]
        try:
            for next_vote in asyncio.as_completed(tasks):
                yes, reason, detail = await next_vote
                if not yes:
                    return decisions.ABORT, reason, detail, contacted, unreachable
        finally:
            for task in tasks:
                task.cancel()
        return decisions.COMMIT, "", "", contacted, unreachable

    async def _prepare(self, txn_id, bank, direction, account, amount_minor, contacted, unreachable):
        link = self.banks.link(bank)
        if link is None:
            return False, "BANK_UNAVAILABLE", f"bank {bank} is not available"
        contacted.add(bank)
        leg = gb.Leg(txn_id=txn_id, account=account, amount_minor=amount_minor,
                     direction=gb.Direction.Value(direction))
        try:
            async with asyncio.timeout(self.prepare_timeout):  # queueing for the batch counts too
                answer = await link.prepare(leg)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            unreachable.add(bank)
            silent = isinstance(exc, TimeoutError) or exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            return False, "BANK_UNAVAILABLE", f"bank {bank}: {'did not vote in time' if silent else exc.details()}"
        if answer.vote == gb.YES:
            return True, "", ""
        return False, _NO_REASONS.get(answer.reason, "REFUSED"), f"bank {bank}: {answer.detail}"

    async def _phase2(self, txn_id, decision, banks):
        """Tell every bank; True when all acknowledged."""
        results = await asyncio.gather(*(self._tell(bank, txn_id, decision) for bank in sorted(banks)))
        return all(results)

    async def _tell(self, bank, txn_id, decision):
        link = self.banks.link(bank)
        if link is None:
            return False
        try:
            await link.decide(txn_id, commit=decision == decisions.COMMIT)
            return True
        except (grpc.aio.AioRpcError, PhaseTwoRefused) as exc:
            why = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            log.warning("%s of %s at %s not acknowledged: %s", decision, txn_id, bank, why)
            return False

    def _retry_phase2(self, txn_id, decision, banks, first_delay=0.2):
        """Phase 2 in the background until every bank acknowledged. One such task per payment, and
        the map is claimed before anything is sent: no two paths tell a bank about a payment at once."""
        if txn_id not in self.retrying:
            self.retrying[txn_id] = asyncio.create_task(
                self._phase2_until_done(txn_id, decision, banks, first_delay))

    async def _phase2_until_done(self, txn_id, decision, banks, delay):
        pending = set(banks)
        try:
            while pending:
                await asyncio.sleep(delay)
                pending = {b for b in pending if not await self._tell(b, txn_id, decision)}
                delay = min(max(delay, 0.1) * 2, MAX_RETRY_DELAY)
            await self.store.phase2_done(txn_id)
            log.info("phase 2 of %s (%s) completed", txn_id, decision)
        finally:
            self.retrying.pop(txn_id, None)

    def _unsettled(self, txn_id):
        """The payment as recorded now, when recovery has something to do for it: no coroutine of
        this process is executing it or telling the banks, and its phase 2 is not done."""
        if txn_id in self.inflight or txn_id in self.retrying:
            return None
        payment = self.store.payment(txn_id)
        return payment if payment is not None and not payment.phase2_done else None

    async def recover(self):
        """Drive every payment whose outcome or phase 2 is unfinished (after a crash, or when etcd
        could not take a decision). A PENDING payment no coroutine is executing is decided from
        etcd, or ABORT if nothing is recorded: its prepares can no longer be collected.

        The list is a snapshot, and while this pass awaits etcd other payments finish: each step
        acts on the payment as recorded at that moment, never on the listed copy."""
        for listed in self.store.unfinished():
            if self._unsettled(listed.txn_id) is None:
                continue
            try:
                decision = await decisions.decide(self.etcd, listed.txn_id, decisions.ABORT)
            except Exception as exc:
                log.warning("recovery of %s postponed: %s", listed.txn_id, exc)
                continue
            payment = self._unsettled(listed.txn_id)
            if payment is None:
                continue
            if not payment.final:
                status = "COMMITTED" if decision == decisions.COMMIT else "ABORTED"
                reason = "" if status == "COMMITTED" else "RECOVERED_ABORT"
                detail = "" if status == "COMMITTED" else "the gateway stopped before deciding"
                await self.store.finish(payment, status, reason, detail, phase2_done=False)
            log.info("recovering %s: %s", payment.txn_id, decision)
            self._retry_phase2(payment.txn_id, decision, {b for b, _, _ in payment.legs()}, first_delay=0)

    async def run_recovery(self, interval=2.0):
        while True:
            try:
                await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("recovery pass failed: %s", exc)
            await asyncio.sleep(interval)
