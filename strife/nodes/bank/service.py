"""The bank's gRPC face (gw_bank.proto): accounts and the participant side of 2PC.

Ledger writes are group-committed: each call's changes go to the ledger together, concurrent
calls' share one transaction and one fsync, and a vote or a transfer's answer leaves only once its
change is on disk.
"""
import asyncio
import time
from typing import Any

import grpc

from strife.core.failpoints import FailpointFired
from strife.core.limits import MAX_BATCH, MAX_FULL_NAME, MAX_HISTORY, MAX_NAME
from strife.nodes.bank import ledger as L
from strife.observe import bank_steps as observe
from strife.rpc import gw_bank_pb2 as pb, gw_bank_pb2_grpc

_DIRECTIONS = {pb.DEBIT: "DEBIT", pb.CREDIT: "CREDIT"}


def _state(outcome) -> Any:
    """A transaction's state on the wire, from the ledger's outcome (COMMITTED or ABORTED)."""
    return pb.TxnState.Value(outcome)  # (Any: protobuf's stubs type the field as its enum wrapper)


def _unexpected(outcomes):
    """Phase-2 outcomes that are failures of the call, not answers about one transaction."""
    return [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, (L.NothingPrepared, L.DecisionConflict))]


def _decided(outcomes):
    """Phase-2 results: the state reached, or the reason this bank could not move that transaction."""
    return [pb.TxnResult(error=str(o)) if isinstance(o, BaseException) else pb.TxnResult(state=_state(o))
            for o in outcomes]


def _info(account, row):
    balance, available, full_name = row
    return pb.AccountInfo(account=account, balance_minor=balance, available_minor=available, full_name=full_name)


class Refused(Exception):
    """A request this bank answers with a gRPC status (an Exchange call ends with it; on Exchanges
    only that request's answer carries it)."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def _check_name(value, what="account"):
    if not value or len(value) > MAX_NAME:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: must be 1..{MAX_NAME} characters")


def _check_ids(txn_ids, required=False, what="txn_ids"):
    if (required and not txn_ids) or len(txn_ids) > MAX_BATCH:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: send 1..{MAX_BATCH} transaction ids")
    for txn_id in txn_ids:
        _check_name(txn_id, "txn_id")


def _check_legs(legs, required=False, what="legs"):
    if (required and not legs) or len(legs) > MAX_BATCH:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: send 1..{MAX_BATCH} legs")
    for leg in legs:
        _check_name(leg.txn_id, "txn_id")
        _check_name(leg.account)
        if _DIRECTIONS.get(leg.direction) is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "direction: must be DEBIT or CREDIT")
        if leg.amount_minor <= 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "amount_minor: must be more than zero")


def _check_transfers(transfers):
    if len(transfers) > MAX_BATCH:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"transfer: send at most {MAX_BATCH} transfers")
    for t in transfers:
        _check_name(t.txn_id, "txn_id")
        _check_name(t.payer, "payer")
        _check_name(t.payee, "payee")
        if t.amount_minor <= 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "amount_minor: must be more than zero")
        if t.payer == t.payee:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "payee: the same account as the payer")


async def _refusing(context: grpc.aio.ServicerContext, work):
    """`work`'s result, or the call ended with the status it was refused with."""
    try:
        return await work
    except Refused as refused:
        await context.abort(refused.code, refused.detail)


class BankService(gw_bank_pb2_grpc.BankServicer):
    def __init__(self, ledger, failpoints, settle_account, stopping: asyncio.Event | None = None):
        self.ledger = ledger
        self.failpoints = failpoints
        self.settle_account = settle_account  # async (account): decided holds applied before a read
        self.stopping = stopping or asyncio.Event()  # set as the server stops taking calls

    async def _check_name(self, context: grpc.aio.ServicerContext, value, what="account"):
        try:
            _check_name(value, what)
        except Refused as refused:
            await context.abort(refused.code, refused.detail)

    async def RegisterClient(self, request, context: grpc.aio.ServicerContext):
        await self._check_name(context, request.account)
        if request.opening_deposit_minor < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "opening_deposit_minor: cannot be negative")
        await self._check_full_name(context, request.full_name)
        try:
            row = await self.ledger.open_account(request.account, request.opening_deposit_minor, request.full_name,
                                           deposit_id=f"register:{request.account}")
        except L.AccountExists:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"account: {request.account!r} exists")
        return _info(request.account, row)

    async def UpdateClientDetails(self, request, context: grpc.aio.ServicerContext):
        await self._check_name(context, request.account)
        await self._check_full_name(context, request.full_name)
        try:
            return _info(request.account, await self.ledger.update_details(request.account, request.full_name))
        except L.UnknownAccount:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"account: no account {request.account!r}")

    async def _check_full_name(self, context: grpc.aio.ServicerContext, full_name):
        if len(full_name) > MAX_FULL_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"full_name: over {MAX_FULL_NAME} characters")

    async def ViewBalance(self, request, context: grpc.aio.ServicerContext):
        try:
            await self.settle_account(request.account)
        except Exception as exc:  # etcd away: a balance that might miss an answered payment is not given
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot settle held payments yet: {exc}")
        try:
            return _info(request.account, self.ledger.account(request.account))
        except L.UnknownAccount:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"account: no account {request.account!r}")

    async def History(self, request, context: grpc.aio.ServicerContext):
        """The account's payments, newest first, once its decided holds are applied (as a balance read)."""
        await self._check_name(context, request.account)
        limit = request.limit if 0 < request.limit <= MAX_HISTORY else MAX_HISTORY
        try:
            await self.settle_account(request.account)
        except Exception as exc:  # etcd away: a history that might miss an answered payment is not given
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot settle held payments yet: {exc}")
        return pb.HistoryResponse(entries=[
            pb.HistoryEntry(txn_id=txn_id, payer=payer, payee=payee, amount_minor=amount, state=_state(state),
                            reason=L.NoReason(reason).number, detail=detail, created_at=created, decided_at=decided,
                            same_bank=bool(same_bank))
            for txn_id, payer, payee, amount, state, reason, detail, created, decided, same_bank
            in self.ledger.history(request.account, limit)])

    async def LockTransaction(self, request, context: grpc.aio.ServicerContext):
        """Prepare every leg of the batch; the votes leave only once all their holds are durable."""
        return pb.LockTransactionResponse(votes=(await _refusing(context, self._checked(
            _check_legs, request.legs, legs=request.legs)))[2])

    async def InitiateTransaction(self, request, context: grpc.aio.ServicerContext):
        """Commit: apply the holds of every transaction in the batch."""
        return pb.DecisionResponse(results=(await _refusing(context, self._checked(
            _check_ids, request.txn_ids, commits=request.txn_ids)))[0])

    async def AbortTransaction(self, request, context: grpc.aio.ServicerContext):
        """Abort: release the holds (or remember the abort of a transaction never seen here)."""
        return pb.DecisionResponse(results=(await _refusing(context, self._checked(
            _check_ids, request.txn_ids, aborts=request.txn_ids)))[1])

    async def Exchange(self, request, context: grpc.aio.ServicerContext):
        """Commits, aborts, prepares and transfers in one call, applied together. A failpoint that
        fires at any of their steps fails the whole call, as it would fail that step's own call."""
        return await _refusing(context, self._exchange(request))

    async def Exchanges(self, requests, context: grpc.aio.ServicerContext):
        """Exchange, many on one stream (the gateway's link): each request is applied beside the
        others, as its own call would be, and answered with its sequence once done. One that fails
        is answered with the status its call would have ended with; the stream goes on.

        When the bank stops, it takes no more requests (as the server takes no more calls), answers
        those it took and ends the stream: what the gateway sent after that fails UNAVAILABLE there,
        unapplied, as a call to a stopping server would."""
        if self.stopping.is_set():
            return  # a stream opened while the bank stops takes nothing
        answers = asyncio.Queue()
        running = set()

        async def answer(request):
            try:
                response = await self._exchange(request)
            except Refused as refused:  # a bad request, or a failpoint that fired (_failpoint)
                response = pb.ExchangeResponse(status=refused.code.value[0], status_detail=refused.detail)
            except Exception as exc:  # noqa: BLE001 (a failed write: the call would end UNKNOWN)
                response = pb.ExchangeResponse(status=grpc.StatusCode.UNKNOWN.value[0],
                                               status_detail=f"Unexpected {type(exc).__name__}: {exc}")
            response.sequence = request.sequence
            answers.put_nowait(response)

        async def read():
            async for request in requests:
                task = asyncio.ensure_future(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)

        async def finish():
            """No more answers once the requests end (or break, or the bank stops taking them) and
            every request taken is answered."""
            stopping = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                reader.cancel()
                await asyncio.wait({reader})
                while running:
                    await asyncio.wait(set(running))
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        finisher = asyncio.ensure_future(finish())
        try:
            while (response := await answers.get()) is not None:
                yield response
            broken = None if reader.cancelled() else reader.exception()
            if broken is not None:
                raise broken  # the stream broke while reading (e.g. bytes that are no message)
        finally:
            finisher.cancel()
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _exchange(self, request):
        """One exchange's answer; raises Refused for a request no call may make, or when a failpoint fires."""
        if not (request.commit or request.abort or request.prepare or request.transfer):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "commit, abort, prepare, transfer: an empty exchange")
        _check_ids(request.commit, what="commit")
        _check_ids(request.abort, what="abort")
        _check_legs(request.prepare, what="prepare")
        _check_transfers(request.transfer)
        commits, aborts, votes, transfers = await self._apply(request.commit, request.abort,
                                                              request.prepare, request.transfer)
        return pb.ExchangeResponse(commits=commits, aborts=aborts, votes=votes, transfers=transfers)

    async def _checked(self, check, items, **parts):
        check(items, required=True)
        return await self._apply(**parts)

    async def _apply(self, commits=(), aborts=(), legs=(), transfers=()):
        """Apply one call's parts in one ledger batch (one transaction, and one fsync when it holds a
        prepare or a transfer), with no task per part or per item: the (commit, abort, vote,
        transfer) results. Each part meets its steps' failpoints: commit, abort, before-prepare and
        transfer before anything is written, and prepare once the holds are durable and before any
        vote leaves."""
        began = time.time()
        for step, part in (("commit", commits), ("abort", aborts), ("before-prepare", legs), ("transfer", transfers)):
            if part:
                await self._failpoint(step)
        committed, aborted, votes, answers = await self.ledger.exchange(
            commits, aborts,
            [(leg.txn_id, leg.account, leg.amount_minor, _DIRECTIONS[leg.direction], leg.counterparty,
              leg.counterparty_bank) for leg in legs],
            [(t.txn_id, t.payer, t.payee, t.amount_minor) for t in transfers])
        if commits:
            observe.decided("commit", commits, committed, began)
        if aborts:
            observe.decided("abort", aborts, aborted, began)
        # a failed write (the disk) fails the call, once every part has been applied and recorded
        failed = [r for r in (*_unexpected(committed), *_unexpected(aborted), *votes, *answers)
                  if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        if legs:
            if any(vote == L.YES for vote, _, _ in votes):
                await self._failpoint("prepare")  # the holds are durable; the votes not yet sent
            observe.prepared(legs, votes, began, _DIRECTIONS)
        if transfers:
            observe.transferred(transfers, answers, began)
        return (_decided(committed), _decided(aborted),
                [pb.VoteResult(vote=pb.YES) if vote == L.YES else pb.VoteResult(vote=pb.NO, reason=reason.number, detail=detail)
                 for vote, reason, detail in votes],
                [pb.TransferResult(state=_state(outcome), reason=reason.number, detail=detail)
                 for outcome, reason, detail in answers])

    async def _failpoint(self, step):
        try:
            await self.failpoints.hit(step)
        except FailpointFired as exc:
            raise Refused(grpc.StatusCode.INTERNAL, str(exc)) from None
