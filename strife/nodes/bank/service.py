"""The bank's gRPC face (gw_bank.proto): accounts and the participant side of 2PC.

Ledger calls are short synchronous SQLite transactions run on the event loop thread: they are
serialised by construction, which is what a ledger wants.
"""
import grpc

from strife.failpoints import FailpointFired
from strife.nodes.bank import ledger as L
from strife.rpc import gw_bank_pb2 as pb
from strife.rpc import gw_bank_pb2_grpc

MAX_NAME = 64
MAX_FULL_NAME = 200
_DIRECTIONS = {pb.DEBIT: "DEBIT", pb.CREDIT: "CREDIT"}
_REASONS = {L.INSUFFICIENT_FUNDS: pb.INSUFFICIENT_FUNDS, L.ACCOUNT_UNKNOWN: pb.ACCOUNT_UNKNOWN,
            L.ALREADY_DECIDED: pb.ALREADY_DECIDED, L.CONFLICT: pb.CONFLICT}
_STATES = {"COMMITTED": pb.COMMITTED, "ABORTED": pb.ABORTED}


def _info(account, row):
    balance, available, full_name = row
    return pb.AccountInfo(account=account, balance_minor=balance, available_minor=available, full_name=full_name)


class BankService(gw_bank_pb2_grpc.BankServicer):
    def __init__(self, ledger, failpoints):
        self.ledger = ledger
        self.failpoints = failpoints

    async def _check_name(self, context, value, what="account"):
        if not value or len(value) > MAX_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be 1..{MAX_NAME} characters")

    async def RegisterClient(self, request, context):
        await self._check_name(context, request.account)
        if request.opening_deposit_minor < 0 or len(request.full_name) > MAX_FULL_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad opening deposit or full name")
        try:
            row = self.ledger.open_account(request.account, request.opening_deposit_minor, request.full_name,
                                           deposit_id=f"register:{request.account}")
        except L.AccountExists:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"account {request.account!r} exists")
        return _info(request.account, row)

    async def UpdateClientDetails(self, request, context):
        await self._check_name(context, request.account)
        if len(request.full_name) > MAX_FULL_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"full name over {MAX_FULL_NAME} characters")
        try:
            return _info(request.account, self.ledger.update_details(request.account, request.full_name))
        except L.UnknownAccount:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no account {request.account!r}")

    async def ViewBalance(self, request, context):
        try:
            return _info(request.account, self.ledger.account(request.account))
        except L.UnknownAccount:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no account {request.account!r}")

    async def LockTransaction(self, request, context):
        await self._check_name(context, request.txn_id, "txn_id")
        await self._check_name(context, request.account)
        direction = _DIRECTIONS.get(request.direction)
        if direction is None or request.amount_minor <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "direction must be DEBIT or CREDIT, amount > 0")
        await self._failpoint("before-prepare", context)
        vote, reason, detail = self.ledger.prepare(request.txn_id, request.account, request.amount_minor, direction)
        if vote == L.YES:
            await self._failpoint("prepare", context)  # the hold is durable; the vote not yet sent
            return pb.LockTransactionResponse(vote=pb.YES)
        return pb.LockTransactionResponse(vote=pb.NO, reason=_REASONS[reason], detail=detail)

    async def InitiateTransaction(self, request, context):
        await self._check_name(context, request.txn_id, "txn_id")
        await self._failpoint("commit", context)
        try:
            return pb.DecisionResponse(state=_STATES[self.ledger.commit(request.txn_id)])
        except L.NothingPrepared as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except L.DecisionConflict as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))

    async def AbortTransaction(self, request, context):
        await self._check_name(context, request.txn_id, "txn_id")
        await self._failpoint("abort", context)
        try:
            return pb.DecisionResponse(state=_STATES[self.ledger.abort(request.txn_id)])
        except L.DecisionConflict as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))

    async def _failpoint(self, step, context):
        try:
            await self.failpoints.hit(step)
        except FailpointFired as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
