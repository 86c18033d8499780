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
from strife.untrusted import field

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
        self.decider = Batcher(lambda items: decisions.decide_many(etcd, items), max_batch=64)

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
            log.warning("payment %s stopped: %s", field(txn_id), field(task.exception()))

    async def _begin_and_execute(self, payment):
        await self.store.begin(payment)
        return await self._execute(payment)

    async def _execute(self, payment):
        want, reason, detail, contacted, unreachable = await self._prepare_all(payment)
        await self.failpoints.hit("after-prepare")
        try:
            decision = await self.decider.submit((payment.txn_id, want))
        except Exception as exc:  # no decision recorded: banks and recovery will settle it
            log.warning("decision for %s not recorded: %s", field(payment.txn_id), field(exc))
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
            log.warning("%s of %s at %s not acknowledged: %s", decision, field(txn_id), bank, field(why))
            return False

    def _retry_phase2(self, txn_id, decision, banks):
        if txn_id not in self.retrying:
            self.retrying[txn_id] = asyncio.create_task(self._phase2_until_done(txn_id, decision, banks))

    async def _phase2_until_done(self, txn_id, decision, banks):
        delay, pending = 0.2, set(banks)
        try:
            while pending:
                await asyncio.sleep(delay)
                pending = {b for b in pending if not await self._tell(b, txn_id, decision)}
                delay = min(delay * 2, MAX_RETRY_DELAY)
            await self.store.phase2_done(txn_id)
            log.info("phase 2 of %s (%s) completed", field(txn_id), decision)
        finally:
            self.retrying.pop(txn_id, None)

    async def recover(self):
        """Drive every payment whose outcome or phase 2 is unfinished (after a crash, or when etcd
        could not take a decision). A PENDING payment no coroutine is executing is decided from
        etcd, or ABORT if nothing is recorded: its prepares can no longer be collected."""
        for payment in self.store.unfinished():
            if payment.txn_id in self.inflight or payment.txn_id in self.retrying:
                continue
            try:
                decision = await decisions.decide(self.etcd, payment.txn_id, decisions.ABORT)
            except Exception as exc:
                log.warning("recovery of %s postponed: %s", field(payment.txn_id), field(exc))
                continue
            if payment.txn_id in self.inflight:
                continue
            banks = {b for b, _, _ in payment.legs()}
            if not payment.final:
                status = "COMMITTED" if decision == decisions.COMMIT else "ABORTED"
                reason = "" if status == "COMMITTED" else "RECOVERED_ABORT"
                detail = "" if status == "COMMITTED" else "the gateway stopped before deciding"
                await self.store.finish(payment, status, reason, detail, phase2_done=False)
            log.info("recovering %s: %s", field(payment.txn_id), decision)
            if await self._phase2(payment.txn_id, decision, banks):
                await self.store.phase2_done(payment.txn_id)
            else:
                self._retry_phase2(payment.txn_id, decision, banks)

    async def run_recovery(self, interval=2.0):
        while True:
            try:
                await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("recovery pass failed: %s", exc)
            await asyncio.sleep(interval)
