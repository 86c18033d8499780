"""The gateway's gRPC face to clients (cl_gw.proto): validation here, 2PC in the coordinator."""
import time
from typing import NoReturn

import grpc

from strife.core import headers, names, passwords
from strife.core.outcomes import AbortReason, NoReason, Outcome, Refusal, refusal
from strife.core.limits import MAX_FULL_NAME, MAX_HISTORY, MAX_NAME
from strife.deployment import tls
from strife.nodes.gateway.coordinator import IdempotencyMismatch
from strife.nodes.gateway.store import Payment, fingerprint
from strife.nodes.gateway.users import PUSHBACK
from strife.rpc import cl_gw_pb2 as cl, cl_gw_pb2_grpc, gw_bank_pb2 as gb


def _wants_stages(context: grpc.aio.ServicerContext):
    return any(key == headers.STAGES for key, _ in context.invocation_metadata() or ())


def _format_stages(stages, received, replied):
    """'prepare=0.812;decision=1.020;coordinator=1.95;received=...;replied=...' for `strife bench`:
    the stages in milliseconds, then when the handler got the request and gave its answer (wall
    clock, seconds): on one machine the caller splits the rest into its way in and the reply's way out."""
    return ";".join([*(f"{name}={seconds * 1000:.3f}" for name, seconds in stages.items()),
                     f"received={received:.6f}", f"replied={replied:.6f}"])


def caller(context: grpc.aio.ServicerContext):
    """The authenticated user: the access interceptor has matched metadata to certificate."""
    identity = tls.peer_identity(context)
    assert identity is not None, "the access interceptor let no anonymous call through"
    return identity.name


# A write given up by the gateway may still land at the bank (an account opened, but no user made
# for it): a write gets longer than a read before the gateway says the bank is unavailable.
BANK_WRITE_TIMEOUT = 5.0


async def _bank_unavailable(context: grpc.aio.ServicerContext, bank, why) -> NoReturn:
    """UNAVAILABLE, with the bank named, and a negative retry pushback: the client's retry policy
    (meant for a gateway it cannot reach) must not send it again, since this gateway has already
    waited prepare_timeout for the bank; four tries made `balance` take 5.5 s."""
    await context.abort(grpc.StatusCode.UNAVAILABLE, f"bank {bank} is not available ({why})",
                        trailing_metadata=((headers.BANK_UNAVAILABLE, bank), (PUSHBACK, "-1")))
    raise AssertionError("context.abort raises")


class ClientGatewayService(cl_gw_pb2_grpc.ClientGatewayServicer):
    def __init__(self, store, banks, coordinator, users, topology):
        self.store, self.banks, self.coordinator, self.users = store, banks, coordinator, users
        self.bank_names = {b.name for b in topology.of_kind("bank")}
        self.node_names = names.node_names(topology)  # a user may not take a node's name
        self.max_amount = topology.settings.max_amount_minor
        self.bank_timeout = topology.settings.prepare_timeout

    async def _bank(self, context: grpc.aio.ServicerContext, bank):
        stub = self.banks.stub(bank)
        if stub is None:
            await _bank_unavailable(context, bank, "not registered in etcd")
        return stub

    async def _bank_call(self, context: grpc.aio.ServicerContext, bank, call, request, timeout=None):
        """A bank's refusal is passed on as it is; a bank that does not answer (a read within
        prepare_timeout, as a prepare) is said to be unavailable, by name."""
        try:
            return await call(request, timeout=timeout or self.bank_timeout)
        except grpc.aio.AioRpcError as exc:
            if refusal(exc.code()) is Refusal.UNREACHABLE:
                await _bank_unavailable(context, bank, f"{exc.code().name.lower()}: {exc.details() or ''}")
            await context.abort(exc.code(), exc.details() or "")

    async def RegisterClient(self, request, context: grpc.aio.ServicerContext):
        name = request.username
        why = names.problem(name, self.node_names)
        if why:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"username: {why}")
        if request.bank not in self.bank_names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"bank: unknown bank {names.shown(request.bank)} "
                                f"(banks: {', '.join(sorted(self.bank_names))})")
        try:
            passwords.check_strength(request.password)
        except passwords.PasswordError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not 0 <= request.opening_deposit_minor <= self.max_amount:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "opening_deposit_minor: must be between 0 and "
                                f"the maximum amount ({self.max_amount} minor units)")
        await self._check_full_name(context, request.full_name)
        if self.users.user(name) is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"username: user {name} already exists")
        stub = await self._bank(context, request.bank)
        info = await self._bank_call(context, request.bank, stub.RegisterClient, gb.RegisterClientRequest(
            account=name, opening_deposit_minor=request.opening_deposit_minor, full_name=request.full_name),
            timeout=BANK_WRITE_TIMEOUT)
        if not await self.users.add(name, request.bank, "client", request.password):  # another gateway was first
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"username: user {name} already exists")
        return cl.RegisterClientResponse(username=name, bank=request.bank, balance_minor=info.balance_minor)

    async def UpdateClientDetails(self, request, context: grpc.aio.ServicerContext):
        user = self.users.user(caller(context))
        if request.new_password:
            try:
                passwords.check_strength(request.new_password)
            except passwords.PasswordError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._check_full_name(context, request.full_name)
        full_name = ""
        if request.full_name:
            stub = await self._bank(context, user.bank)
            info = await self._bank_call(context, user.bank, stub.UpdateClientDetails, gb.UpdateClientDetailsRequest(
                account=user.name, full_name=request.full_name), timeout=BANK_WRITE_TIMEOUT)
            full_name = info.full_name
        if request.new_password:
            await self.users.change_password(user.name, request.new_password)
        return cl.UpdateClientDetailsResponse(username=user.name, full_name=full_name)

    async def _check_full_name(self, context: grpc.aio.ServicerContext, full_name):
        if len(full_name) > MAX_FULL_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"full_name: over {MAX_FULL_NAME} characters ({len(full_name)})")

    async def ViewBalance(self, request, context: grpc.aio.ServicerContext):
        user = self.users.user(caller(context))
        stub = await self._bank(context, user.bank)
        info = await self._bank_call(context, user.bank, stub.ViewBalance, gb.ViewBalanceRequest(account=user.name))
        return cl.ViewBalanceResponse(username=user.name, bank=user.bank, balance_minor=info.balance_minor,
                                      available_minor=info.available_minor)

    async def InitiateTransaction(self, request, context: grpc.aio.ServicerContext):
        received = time.time()
        payer = self.users.user(caller(context))
        why = names.txn_id_problem(request.txn_id)
        if why:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"txn_id: {why}")
        if request.amount_minor <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount_minor: the amount must be more than zero")
        if request.amount_minor > self.max_amount:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"amount_minor: the amount is above the maximum of {self.max_amount} minor units")
        if request.payee == payer.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payee: payer and payee are the same user")
        if len(request.payee) > MAX_NAME:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"payee: the name is over {MAX_NAME} characters")
        payee = await self.users.lookup(request.payee)
        if payee is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"payee: unknown payee {names.shown(request.payee)}")
        payment = Payment(txn_id=request.txn_id, payer=payer.name, payer_bank=payer.bank,
                          payee=payee.name, payee_bank=payee.bank, amount_minor=request.amount_minor,
                          fingerprint=fingerprint(payer.name, payer.bank, payee.name, payee.bank,
                                                  request.amount_minor))
        try:
            result = await self.coordinator.pay(payment)
        except IdempotencyMismatch as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"txn_id: idempotency_error: {exc}")
        if result.stages and _wants_stages(context):
            context.set_trailing_metadata(((headers.STAGES, _format_stages(result.stages, received, time.time())),))
        return result.to_proto()

    async def ViewTransactionHistory(self, request, context: grpc.aio.ServicerContext):
        """From the user's bank (it knows every payment that touched the account, whichever gateway
        took it), each with the answer its gateway gave: the record in etcd, within the retention;
        after it, the bank's state with no reason (docs/architecture.md)."""
        user = self.users.user(caller(context))
        limit = request.limit if 0 < request.limit <= MAX_HISTORY else MAX_HISTORY
        stub = await self._bank(context, user.bank)
        history = await self._bank_call(context, user.bank, stub.History,
                                        gb.HistoryRequest(account=user.name, limit=limit))
        entries = history.entries
        answers = await self.coordinator.recorded_answers([e.txn_id for e in entries if not e.same_bank])
        return cl.ViewTransactionHistoryResponse(payments=[
            cl.Payment(txn_id=e.txn_id, payer=e.payer, payee=e.payee, amount_minor=e.amount_minor,
                       created_at=e.created_at, decided_at=e.decided_at,
                       **_shown_answer(e, answers.get(e.txn_id), user.bank))
            for e in entries])


_STATES = {gb.PREPARED: Outcome.IN_PROGRESS, gb.COMMITTED: Outcome.COMMITTED, gb.ABORTED: Outcome.ABORTED}


def _shown_answer(entry, recorded, bank):
    """outcome, reason, detail of one history entry, as wire numbers: the recorded answer if any."""
    if entry.same_bank:  # the bank's transfer row is the record
        reason = NoReason.of_number(entry.reason)
        return {"outcome": _STATES[entry.state].number, "reason": reason.for_the_payer().number if reason else 0,
                "detail": f"bank {bank}: {entry.detail}" if entry.detail else ""}
    if recorded is not None:
        return {"outcome": Outcome(recorded["outcome"]).number, "reason": AbortReason(recorded["reason"]).number,
                "detail": recorded["detail"]}
    return {"outcome": _STATES[entry.state].number, "reason": 0, "detail": ""}
