"""The gateway's gRPC face to clients (cl_gw.proto): validation here, 2PC in the coordinator."""
import re

import grpc

from strife import passwords, tls
from strife.launcher.topology import NAME
from strife.nodes.gateway.coordinator import IdempotencyMismatch
from strife.nodes.gateway.store import Payment, fingerprint
from strife.rpc import cl_gw_pb2 as cl
from strife.rpc import cl_gw_pb2_grpc
from strife.rpc import gw_bank_pb2 as gb

TXN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_FULL_NAME = 200
MAX_HISTORY = 1000
_STATUS = {"COMMITTED": cl.COMMITTED, "ABORTED": cl.ABORTED, "PENDING": cl.IN_PROGRESS}


def caller(context):
    """The authenticated user: the access interceptor has matched metadata to certificate."""
    return tls.peer_identity(context).name


class ClientGatewayService(cl_gw_pb2_grpc.ClientGatewayServicer):
    def __init__(self, store, banks, coordinator, users, topology):
        self.store, self.banks, self.coordinator, self.users = store, banks, coordinator, users
        self.bank_names = {b.name for b in topology.of_kind("bank")}
        self.max_amount = topology.settings.max_amount_minor

    async def _bank(self, context, bank):
        stub = self.banks.stub(bank)
        if stub is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"bank {bank} is not available")
        return stub

    async def _bank_call(self, context, call, request):
        try:
            return await call(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details())

    async def RegisterClient(self, request, context):
        name = request.username
        if not NAME.fullmatch(name):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name[:80]!r} is not a usable user name: "
                                "lower-case letters, digits, - and _, starting with a letter, at most 32")
        if request.bank not in self.bank_names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown bank {request.bank[:80]!r} "
                                f"(banks: {', '.join(sorted(self.bank_names))})")
        try:
            passwords.check_strength(request.password)
        except passwords.PasswordError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not 0 <= request.opening_deposit_minor <= self.max_amount or len(request.full_name) > MAX_FULL_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the opening deposit must be between 0 and the maximum amount")
        if self.store.user(name) is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"user {name} already exists")
        stub = await self._bank(context, request.bank)
        info = await self._bank_call(context, stub.RegisterClient, gb.RegisterClientRequest(
            account=name, opening_deposit_minor=request.opening_deposit_minor, full_name=request.full_name))
        await self.users.add(name, request.bank, "client", request.password)
        return cl.RegisterClientResponse(username=name, bank=request.bank, balance_minor=info.balance_minor)

    async def UpdateClientDetails(self, request, context):
        user = self.store.user(caller(context))
        if request.new_password:
            try:
                passwords.check_strength(request.new_password)
            except passwords.PasswordError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if len(request.full_name) > MAX_FULL_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"full name over {MAX_FULL_NAME} characters")
        full_name = ""
        if request.full_name:
            stub = await self._bank(context, user.bank)
            info = await self._bank_call(context, stub.UpdateClientDetails, gb.UpdateClientDetailsRequest(
                account=user.name, full_name=request.full_name))
            full_name = info.full_name
        if request.new_password:
            await self.users.change_password(user.name, request.new_password)
        return cl.UpdateClientDetailsResponse(username=user.name, full_name=full_name)

    async def ViewBalance(self, request, context):
        user = self.store.user(caller(context))
        stub = await self._bank(context, user.bank)
        info = await self._bank_call(context, stub.ViewBalance, gb.ViewBalanceRequest(account=user.name))
        return cl.ViewBalanceResponse(username=user.name, bank=user.bank, balance_minor=info.balance_minor,
                                      available_minor=info.available_minor)

    async def InitiateTransaction(self, request, context):
        payer = self.store.user(caller(context))
        if not TXN_ID.fullmatch(request.txn_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "txn_id must be 1-64 letters, digits, '.', '_' or '-' (a UUID is best)")
        if request.amount_minor <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the amount must be more than zero")
        if request.amount_minor > self.max_amount:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the amount is above the maximum of {self.max_amount} minor units")
        if request.payee == payer.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payer and payee are the same user")
        if len(request.payee) > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the payee name is over 64 characters")
        payee = self.store.user(request.payee)
        if payee is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown payee {request.payee[:64]!r}")
        payment = Payment(txn_id=request.txn_id, payer=payer.name, payer_bank=payer.bank,
                          payee=payee.name, payee_bank=payee.bank, amount_minor=request.amount_minor,
                          fingerprint=fingerprint(payer.name, payer.bank, payee.name, payee.bank,
                                                  request.amount_minor))
        try:
            result = await self.coordinator.pay(payment)
        except IdempotencyMismatch as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"idempotency_error: {exc}")
        return result.to_proto()

    async def ViewTransactionHistory(self, request, context):
        limit = request.limit if 0 < request.limit <= MAX_HISTORY else MAX_HISTORY
        rows = self.store.history(caller(context), limit)
        return cl.ViewTransactionHistoryResponse(payments=[
            cl.Payment(txn_id=p.txn_id, payer=p.payer, payee=p.payee, amount_minor=p.amount_minor,
                       outcome=_STATUS[p.status], reason=cl.AbortReason.Value(p.reason or "REASON_UNSPECIFIED"),
                       detail=p.detail, created_at=p.created_at, decided_at=p.decided_at or 0.0)
            for p in rows])
