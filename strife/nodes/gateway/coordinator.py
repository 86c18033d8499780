"""Payments, coordinator side.

Within one bank (payer and payee there): one Transfer to that bank, which debits, credits and
records the id with its answer in one atomic step. No hold, no decision in etcd.

With several gateways, any of them may receive any payment, even the same id at two of them at
once: first the payment's terms are claimed in etcd (strife/core/decisions.py), so one id is only
ever prepared with one set of terms. A claim that finds other terms is an idempotency error; one
that finds a recorded answer returns it (and finishes phase 2, in case its gateway died).

Between two banks, two-phase commit:
1. Record the payment PENDING (this gateway's journal) before anything is sent.
2. Prepare both sides in parallel under prepare_timeout; the first NO ends the wait.
3. Decide: COMMIT only if both voted YES, written to etcd create-if-absent together with the
   answer; obey what stands (and its recorded answer).
4. Answer the client: the decision is durable in etcd. A read that follows settles the account's
   holds from it (the bank resolves its PREPARED holds on read), so it already reflects the payment.
5. Phase 2 to every bank that may hold something, in the background, retried until acknowledged;
   `idempotency_retention` later the record is deleted from etcd (this store's row keeps answering
   retries here; elsewhere the banks refuse to move the money again: docs/architecture.md).
Anything a crash interrupts is driven again by `recover`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import grpc

from strife.core import decisions
from strife.core.outcomes import AbortReason, NoReason, Outcome
from strife.core.untrusted import field
from strife.nodes.gateway.banks import PhaseTwoRefused
from strife.nodes.gateway.batching import Batcher
from strife.nodes.gateway.store import Payment
from strife.observe import gateway_steps as observe
from strife.rpc import cl_gw_pb2 as cl, gw_bank_pb2 as gb

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 5.0
TRANSFER_TIMEOUT = 5.0
# A payment's record is deleted from etcd settings.idempotency_retention after every bank
# acknowledged phase 2 (at least this long: the banks' relaxed phase-2 writes and this store's
# row must be on disk first; both flush within a second).
MIN_RETENTION = 2.0
FORGET_EVERY = 2.0
FORGET_BATCH = 25          # 5 deletes each: under etcd's 128 operations per transaction
GATEWAY_STOPPED = {"outcome": Outcome.ABORTED, "reason": AbortReason.RECOVERED_ABORT,
                   "detail": "the gateway stopped before deciding"}


def _answer(outcome: str, reason: str = AbortReason.NONE, detail: str = "") -> dict[str, str]:
    """The answer recorded in etcd beside a decision (names: strife/core/outcomes.py)."""
    return {"outcome": outcome, "reason": reason, "detail": detail}


def _refusal(bank, answer):
    """(reason, detail) for the payer when `bank` said no (a vote or a transfer)."""
    return NoReason.of_number(answer.reason).for_the_payer(), f"bank {bank}: {answer.detail}"


def _answer_for(standing):
    """The answer recorded with a decision, or (a decision written before answers were) derived."""
    if standing.answer is not None:
        return standing.answer
    return _answer(Outcome.COMMITTED) if standing.outcome == decisions.COMMIT else GATEWAY_STOPPED


def terms_of(payment: Payment) -> dict[str, str | int | float]:
    """The payment's terms as recorded in etcd: what any gateway compares a retry with."""
    return {"fingerprint": payment.fingerprint, "payer": payment.payer, "payer_bank": payment.payer_bank,
            "payee": payment.payee, "payee_bank": payment.payee_bank, "amount_minor": payment.amount_minor,
            "created_at": payment.created_at}


class IdempotencyMismatch(Exception):
    """The transaction id was already used for a payment with other terms."""


class Result:
    __slots__ = ("txn_id", "outcome", "reason", "detail", "stages")

    def __init__(self, txn_id: str, outcome: Outcome | str, reason: AbortReason | str = AbortReason.NONE,
                 detail: str = "", stages: dict[str, float] | None = None) -> None:
        self.txn_id, self.outcome, self.reason, self.detail = txn_id, Outcome(outcome), AbortReason(reason), detail
        self.stages = stages  # {stage: seconds} of the execution that gave this answer, if it was this one

    @classmethod
    def of(cls, payment: Payment, stages: dict[str, float] | None = None) -> Result:
        return cls(payment.txn_id, payment.outcome, payment.abort_reason, payment.detail, stages)

    @classmethod
    def pending(cls, txn_id: str, detail: str) -> Result:
        return cls(txn_id, Outcome.IN_PROGRESS, detail=detail)

    def to_proto(self) -> cl.InitiateTransactionResponse:
        return cl.InitiateTransactionResponse(txn_id=self.txn_id, outcome=self.outcome.number,
                                              reason=self.reason.number, detail=self.detail)


class Coordinator:
    def __init__(self, store, banks, etcd, settings, failpoints, shared=False):
        self.store, self.banks, self.etcd = store, banks, etcd
        self.prepare_timeout = settings.prepare_timeout
        self.retention = max(MIN_RETENTION, settings.idempotency_retention)
        # Several gateways: terms are claimed in etcd before anything is prepared. One gateway: its
        # own store and in-flight map already see every use of an id; the terms go with the decision.
        self.shared = shared
        self.claimer = Batcher(lambda items: decisions.claim_many(etcd, items), max_batch=100)
        self.failpoints = failpoints
        self.inflight = {}     # txn_id -> (Task[Result], Payment): duplicates wait for one execution
        self.retrying = {}     # txn_id -> phase-2 retry task
        # decisions in flight together go to etcd in one transaction
        # (a COMMIT compares its key and both banks' abort keys: 40 stay under etcd's 128 compares)
        self.decider = Batcher(lambda items: decisions.decide_many(etcd, items), max_batch=40)

    async def pay(self, payment: Payment) -> Result:
        observe.received(payment)
        running, known = self.inflight.get(payment.txn_id, (None, None))
        existing = self.store.payment(payment.txn_id) if running is None else None
        if running is not None or existing is not None:
            known = existing or known
            if known.fingerprint != payment.fingerprint:
                raise IdempotencyMismatch(f"transaction id {payment.txn_id} was already used for another payment")
            if running is not None:
                return observe.replayed(payment, await asyncio.shield(running), "in flight")
            assert existing is not None
            if existing.final:
                return observe.replayed(payment, Result.of(existing), "store")
            return observe.replayed(payment, Result.pending(payment.txn_id, "being recovered; ask again with the same id"),
                                    "store")
        return await asyncio.shield(self._claim(payment, self._begin_and_execute(payment)))

    def _claim(self, payment, execution):
        """Run `execution` as the one execution of this payment in this process.

        Claimed before the first await: a concurrent duplicate finds it and waits for it. A task of
        its own: a caller that hangs up does not stop the protocol halfway."""
        task = asyncio.ensure_future(execution)
        self.inflight[payment.txn_id] = (task, payment)
        task.add_done_callback(lambda t: self._done(payment.txn_id, t))
        return task

    def _done(self, txn_id, task):
        del self.inflight[txn_id]
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, IdempotencyMismatch):  # seen here even if every caller left
            log.warning("payment %s stopped: %s", field(txn_id), field(error))

    async def _begin_and_execute(self, payment):
        began = time.perf_counter()
        payment.created_at = time.time()
        if self.shared:
            try:
                claim = await self.claimer.submit((payment.txn_id, terms_of(payment)))
            except Exception as exc:  # nothing is recorded or sent: asking again is safe
                log.warning("terms of %s not claimed: %s", field(payment.txn_id), field(exc))
                return Result.pending(payment.txn_id, "the payment could not be recorded yet; "
                                                      "ask again with the same id")
            if claim.terms.get("fingerprint") != payment.fingerprint:
                raise IdempotencyMismatch(f"transaction id {payment.txn_id} was already used for another payment")
            payment.created_at = claim.terms.get("created_at", payment.created_at)
            if claim.answer is not None:  # decided through another gateway: its answer, and phase 2 once more
                return observe.replayed(payment, await self._obey(payment, claim), "etcd")
        await self.store.begin(payment)
        if payment.payer_bank == payment.payee_bank:
            return observe.answered(payment, await self._transfer(payment), began)
        return observe.answered(payment, await self._execute(payment), began)

    async def _obey(self, payment, claim):
        """Journal a payment another gateway decided, finish its phase 2 (idempotent at the banks:
        its gateway may have died before), and answer what was recorded."""
        await self.store.begin(payment)
        answer = claim.answer
        await self.store.finish(payment, answer["outcome"], answer["reason"], answer["detail"], phase2_done=False)
        self._retry_phase2(payment, claim.outcome or decisions.ABORT,
                           {payment.payer_bank, payment.payee_bank}, first_delay=0)
        return Result.of(payment)

    async def _transfer(self, payment):
        """One phase for one bank. A bank that did not answer may still apply it: the payment stays
        PENDING, and a retry or recovery sends the same transfer again to learn its answer."""
        bank = payment.payer_bank
        link = self.banks.link(bank)
        if link is None:  # nothing was sent: aborting is safe
            await self.store.finish(payment, Outcome.ABORTED, AbortReason.BANK_UNAVAILABLE, f"bank {bank} is not available",
                                    phase2_done=True)
            return Result.of(payment)
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT):
                answer = await observe.transfer(link.transfer(gb.Transfer(
                    txn_id=payment.txn_id, payer=payment.payer, payee=payment.payee,
                    amount_minor=payment.amount_minor)), payment.txn_id, bank)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            why = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "no answer in time"
            log.warning("transfer %s at %s not answered: %s", field(payment.txn_id), bank, why)
            return Result.pending(payment.txn_id, f"bank {bank} has not answered yet; "
                                                            "ask again with the same id")
        if answer.reason == gb.CONFLICT:  # the bank knows this id for another payment
            await self.store.discard(payment.txn_id)
            raise IdempotencyMismatch(f"transaction id {payment.txn_id} was already used for another payment")
        if answer.state == gb.COMMITTED:
            await self.store.finish(payment, Outcome.COMMITTED, AbortReason.NONE, "", phase2_done=True)
        else:
            await self.store.finish(payment, Outcome.ABORTED, *_refusal(bank, answer), phase2_done=True)
        return Result.of(payment)

    async def _execute(self, payment):
        began = time.perf_counter()
        want, reason, detail, contacted, _ = await self._prepare_all(payment)
        prepared = time.perf_counter()
        await self.failpoints.hit("after-prepare")
        proposed = _answer(Outcome.COMMITTED) if want == decisions.COMMIT else _answer(Outcome.ABORTED, reason, detail)
        try:
            standing = await self.decider.submit(
                (payment.txn_id, want, (payment.payer_bank, payment.payee_bank), proposed,
                 None if self.shared else terms_of(payment)))
        except Exception as exc:  # no decision recorded: banks and recovery will settle it
            log.warning("decision for %s not recorded: %s", field(payment.txn_id), field(exc))
            return Result.pending(payment.txn_id, "the decision could not be recorded yet; "
                                                            "ask again with the same id")
        decided = time.perf_counter()
        observe.decided(payment.txn_id, decided - prepared, want, standing)
        await self.failpoints.hit("after-decision")
        answer = _answer_for(standing)  # what was recorded first, by whichever path got there
        await self.store.finish(payment, answer["outcome"], answer["reason"], answer["detail"], phase2_done=False)
        # The answer leaves now; phase 2 follows (the banks that did not vote are told too).
        self._retry_phase2(payment, standing.outcome, contacted, first_delay=0)
        return Result.of(payment, {"prepare": prepared - began, "decision": decided - prepared,
                                   "coordinator": time.perf_counter() - began})

    async def _prepare_all(self, payment):
        """(COMMIT|ABORT, reason, detail, banks that may hold something, banks that did not answer)."""
        contacted, unreachable = set(), set()
        tasks = [asyncio.ensure_future(observe.prepare(self._prepare(
                     payment, bank, direction, account, contacted, unreachable), payment.txn_id, bank))
                 for bank, direction, account in payment.legs()]
        try:
            for next_vote in asyncio.as_completed(tasks):
                yes, reason, detail = await next_vote
                if not yes:
                    return decisions.ABORT, reason, detail, contacted, unreachable
        finally:
            for task in tasks:
                task.cancel()
        return decisions.COMMIT, AbortReason.NONE, "", contacted, unreachable

    async def _prepare(self, payment, bank, direction, account, contacted, unreachable):
        link = self.banks.link(bank)
        if link is None:
            return False, AbortReason.BANK_UNAVAILABLE, f"bank {bank} is not available"
        contacted.add(bank)
        debit = direction == "DEBIT"
        leg = gb.Leg(txn_id=payment.txn_id, account=account, amount_minor=payment.amount_minor,
                     direction=gb.Direction.Value(direction),  # pyright: ignore[reportArgumentType] (stubs: int)
                     counterparty=payment.payee if debit else payment.payer,
                     counterparty_bank=payment.payee_bank if debit else payment.payer_bank)
        try:
            async with asyncio.timeout(self.prepare_timeout):  # queueing for the batch counts too
                answer = await link.prepare(leg)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            unreachable.add(bank)
            spoke = isinstance(exc, grpc.aio.AioRpcError) and exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED
            why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) and spoke else "did not vote in time"
            return False, AbortReason.BANK_UNAVAILABLE, f"bank {bank}: {why}"
        if answer.vote == gb.YES:
            return True, AbortReason.NONE, ""
        return False, *_refusal(bank, answer)

    async def _tell(self, bank, txn_id, decision, account):
        link = self.banks.link(bank)
        if link is None:
            return False
        try:
            await link.decide(txn_id, commit=decision == decisions.COMMIT, account=account)
            return True
        except (grpc.aio.AioRpcError, PhaseTwoRefused) as exc:
            why = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            log.warning("%s of %s at %s not acknowledged: %s", decision, field(txn_id), bank, field(why))
            return False

    def _retry_phase2(self, payment, decision, banks, first_delay=0.2):
        """Phase 2 in the background until every bank acknowledged. One such task per payment, and
        the map is claimed before anything is sent: no two paths tell a bank about a payment at once."""
        if payment.txn_id not in self.retrying:
            accounts = {bank: account for bank, _, account in payment.legs() if bank in banks}
            self.retrying[payment.txn_id] = asyncio.create_task(
                self._phase2_until_done(payment.txn_id, decision, accounts, first_delay))

    async def _phase2_until_done(self, txn_id, decision, accounts, delay):
        """`accounts`: bank -> the account the payment touches there."""
        pending, attempt, started = set(accounts), 0, time.time()
        try:
            await self.failpoints.hit("before-commit")
            while pending:
                if delay:
                    await asyncio.sleep(delay)
                attempt += 1
                acknowledged = await asyncio.gather(*(observe.phase2(self._tell(b, txn_id, decision, accounts[b]),
                                                                     txn_id, b, decision, attempt)
                                                      for b in sorted(pending)))
                pending = {b for b, ok in zip(sorted(pending), acknowledged) if not ok}
                delay = min(max(delay, 0.1) * 2, MAX_RETRY_DELAY)
            await self.store.phase2_done(txn_id)
            observe.phase2_done(txn_id, started)
        finally:
            self.retrying.pop(txn_id, None)

    def _unsettled(self, txn_id):
        """The payment as recorded now, when recovery has something to do for it: no coroutine of
        this process is executing it or telling the banks, and its phase 2 is not done."""
        if txn_id in self.inflight or txn_id in self.retrying:
            return None
        payment = self.store.payment(txn_id)
        return payment if payment is not None and not payment.phase2_done else None

    async def recover(self) -> None:
        """Drive every payment whose outcome or phase 2 is unfinished (after a crash, or when etcd
        could not take a decision). A PENDING payment no coroutine is executing is decided from
        etcd, or ABORT if nothing is recorded: its prepares can no longer be collected.

        The list is a snapshot, and while this pass awaits etcd other payments finish: each step
        acts on the payment as recorded at that moment, never on the listed copy."""
        for listed in self.store.unfinished():
            if self._unsettled(listed.txn_id) is None:
                continue
            if listed.payer_bank == listed.payee_bank:  # ask the bank again: its record answers
                self._claim(listed, self._transfer(listed))
                continue
            try:
                standing = await decisions.decide(self.etcd, listed.txn_id, decisions.ABORT, answer=GATEWAY_STOPPED,
                                                  terms=None if self.shared else terms_of(listed))
            except Exception as exc:
                log.warning("recovery of %s postponed: %s", field(listed.txn_id), field(exc))
                continue
            payment = self._unsettled(listed.txn_id)
            if payment is None:
                continue
            answer = None
            if not payment.final:
                answer = _answer_for(standing)
                await self.store.finish(payment, answer["outcome"], answer["reason"], answer["detail"],
                                        phase2_done=False)
            observe.recovered(payment, standing.outcome, answer)
            log.info("recovering %s: %s", field(payment.txn_id), standing.outcome)
            self._retry_phase2(payment, standing.outcome, {b for b, _, _ in payment.legs()}, first_delay=0)

    async def recorded_answers(self, txn_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """{txn_id: answer} of the given payments: the record in etcd (any gateway's answer, within the
        retention), else this gateway's journal. Payments with neither are missing."""
        answers = {}
        try:
            answers = await decisions.read_answers(self.etcd, txn_ids)
        except Exception as exc:  # etcd away: this gateway's own answers still show
            log.warning("history without the records in etcd: %s", field(exc))
        for txn_id in txn_ids:
            if txn_id not in answers and (payment := self.store.payment(txn_id)) is not None and payment.final:
                answers[txn_id] = _answer(payment.outcome, payment.abort_reason, payment.detail)
        return answers

    async def forget_finished(self, now: float | None = None) -> int:
        """Delete from etcd the records of payments every bank applied a retention ago; how many."""
        items = self.store.to_forget((now or time.time()) - self.retention, limit=FORGET_BATCH * 10)
        for i in range(0, len(items), FORGET_BATCH):
            chunk = items[i:i + FORGET_BATCH]
            await decisions.forget(self.etcd, chunk)
            await self.store.forgotten([txn_id for txn_id, _ in chunk])
        return len(items)

    async def run_forgetting(self) -> None:
        while True:
            try:
                await self.forget_finished()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd away: they wait for the next round
                log.warning("forgetting finished decisions postponed: %s", field(exc))
            await asyncio.sleep(FORGET_EVERY)

    async def run_recovery(self, interval: float = 2.0) -> None:
        while True:
            try:
                await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("recovery pass failed: %s", field(exc))
            await asyncio.sleep(interval)
