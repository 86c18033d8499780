"""Server interceptors, one concern each, applied to every method of a node:

- AccessInterceptor: who may call what, from the verified peer certificate (role = OU), plus an
  optional node-specific `authenticate` step (the gateway checks user name and password).
- CallLogInterceptor: one structured line per call. It reads only chosen request fields
  (txn id, amount, payee), escaped and bounded: metadata, where the password travels, is never logged.

Both rebuild each handler with `_wrap`, which also makes request decoding tolerant: bytes that are
not the method's message reach the handler as `_Malformed` and are answered INVALID_ARGUMENT there
(on a stream of requests, such a message ends the stream with INVALID_ARGUMENT).

A stream whose messages carry a `sequence` (gw_bank's Exchanges: many exchanges on one call) is
logged as its calls would be: one line per answer, with its request's fields, code and time.
"""
import asyncio
import time

import grpc
from loguru import logger

from strife.core.failpoints import FailpointFired
from strife.core.limits import MAX_BATCH  # a batch's ids logged: a bank accepts no more
from strife.core.untrusted import MAX_FIELD, field
from strife.deployment import tls

EVERYONE = frozenset({"etcd", "bank", "gateway", "client", "admin", "operator"})
LOGGED_FIELDS = ("txn_id", "amount_minor", "payee", "account", "username")
LEG_LISTS = ("legs", "prepare")               # batches of legs: txn:account:amount each
TRANSFER_LISTS = ("transfer",)                # batches of same-bank transfers: txn:payer:payee:amount each
ID_LISTS = ("txn_ids", "commit", "abort")     # batches of transaction ids

# loguru directly, not the stdlib: no LogRecord on the hot path, and the fields stay keys for
# JSON lines (strife/core/log_format.py renders them; strife/core/log_setup.py configures the sinks)
log = logger.bind(logger="strife.calls")


class _Malformed:
    """Stands for a request whose bytes did not decode: the handler refuses it, with its context."""

    def __init__(self, error):
        self.error = error


def _tolerant(deserializer):
    """A deserializer that never raises: gRPC would answer UNKNOWN and log a traceback."""
    if deserializer is None or getattr(deserializer, "tolerant", False):
        return deserializer

    def deserialize(data):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 (any decoding failure: protobuf raises DecodeError, others vary)
            return _Malformed(exc)

    deserialize.tolerant = True
    return deserialize


def _refusing_malformed(behaviour):
    """The handler itself, which alone answers INVALID_ARGUMENT to a request that did not decode, so
    every interceptor around it (access, call log) still runs in order."""
    if getattr(behaviour, "wrapped", False):
        return behaviour

    async def refuse_or_run(request, context: grpc.aio.ServicerContext):
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid message for this method")
        try:
            return await behaviour(request, context)
        except FailpointFired as fired:  # an armed `error`: a failed call (UNKNOWN, as before), not a traceback
            await context.abort(grpc.StatusCode.UNKNOWN, str(fired))

    return refuse_or_run


def _refusing_malformed_stream(behaviour):
    if getattr(behaviour, "wrapped", False):
        return behaviour

    async def refuse_or_run(request, context: grpc.aio.ServicerContext):
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid message for this method")
        async for item in behaviour(request, context):
            yield item

    return refuse_or_run


def _refusing_malformed_requests(behaviour):
    if getattr(behaviour, "wrapped", False):
        return behaviour

    def refuse_or_run(requests, context: grpc.aio.ServicerContext):
        async def decoded():
            async for request in requests:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid message for this method")
                yield request
        return behaviour(decoded(), context)

    return refuse_or_run


def _opened(around):
    """`around` for a stream of answers from a coroutine one: it runs before the first answer, then
    the answers pass (an access check; not a call log, which wants each answer)."""
    def around_stream(behaviour, requests, context: grpc.aio.ServicerContext):
        async def answers():
            async def opening(requests, context):
                return behaviour(requests, context)  # the answers, not yet read
            async for answer in await around(opening, requests, context):
                yield answer
        return answers()
    return around_stream


def _wrap(handler, around, around_stream=None):
    """Rebuild `handler` so that its behaviour runs inside `around(behaviour, request, context)`, or
    for a stream of requests inside `around_stream(behaviour, requests, context)` (an async
    iterator of the answers; by default `around` runs before the first)."""
    if handler is None:
        return None
    deserializer = _tolerant(handler.request_deserializer)
    if handler.unary_unary:
        inner = _refusing_malformed(handler.unary_unary)

        async def unary_unary(request, context: grpc.aio.ServicerContext):
            return await around(inner, request, context)

        unary_unary.wrapped = True
        return grpc.unary_unary_rpc_method_handler(unary_unary, deserializer, handler.response_serializer)
    if handler.unary_stream:
        inner = _refusing_malformed_stream(handler.unary_stream)

        async def unary_stream(request, context: grpc.aio.ServicerContext):
            async def collect(request, context: grpc.aio.ServicerContext):
                return [item async for item in inner(request, context)]
            for item in await around(collect, request, context):
                yield item

        unary_stream.wrapped = True
        return grpc.unary_stream_rpc_method_handler(unary_stream, deserializer, handler.response_serializer)
    if handler.stream_stream:
        inner = _refusing_malformed_requests(handler.stream_stream)
        around_stream = around_stream or _opened(around)

        async def stream_stream(requests, context: grpc.aio.ServicerContext):  # gRPC wants an async generator
            async for answer in around_stream(inner, requests, context):
                yield answer

        stream_stream.wrapped = True
        return grpc.stream_stream_rpc_method_handler(stream_stream, deserializer, handler.response_serializer)
    return handler  # client-streaming methods alone: none in Strife's protos


def _fields(request):
    """The loggable fields of a request as (name, value): chosen names only, amounts as integers,
    batches as comma-joined ids. Every text is client-chosen: escaped and bounded (untrusted.field),
    and a batch lists at most MAX_BATCH."""
    fields = []
    logged, leg_lists, transfer_lists, id_lists = _plan(request)
    for name in logged:
        value = getattr(request, name)
        if value not in (None, "", 0):
            fields.append((name, value if type(value) is int else field(value)))
    for name in leg_lists:
        legs = getattr(request, name)
        if legs:
            fields.append((name, field(_listed([f"{leg.txn_id}:{leg.account}:{leg.amount_minor}"
                                                for leg in legs[:MAX_BATCH]], len(legs)), limit=None)))
    for name in transfer_lists:
        transfers = getattr(request, name)
        if transfers:
            fields.append((name, field(_listed([f"{t.txn_id}:{t.payer}:{t.payee}:{t.amount_minor}"
                                                for t in transfers[:MAX_BATCH]], len(transfers)), limit=None)))
    for name in id_lists:
        txn_ids = getattr(request, name)
        if txn_ids:
            fields.append((name, field(_listed(txn_ids[:MAX_BATCH], len(txn_ids)), limit=None)))
    return fields


_PLANS = {}  # request class -> the logged names it has: looking up absent ones costs per call


def _plan(request):
    kind = type(request)
    plan = _PLANS.get(kind)
    if plan is None:
        plan = _PLANS[kind] = tuple([name for name in names if hasattr(request, name)]
                                    for names in (LOGGED_FIELDS, LEG_LISTS, TRANSFER_LISTS, ID_LISTS))
    return plan


def _listed(items, total):
    """Comma-joined, each item cut to MAX_FIELD (the whole is escaped by the caller)."""
    more = total - len(items)
    cut = [item if len(item) <= MAX_FIELD else f"{item[:MAX_FIELD]}...[+{len(item) - MAX_FIELD} chars]"
           for item in items]
    return ",".join(cut) + (f"...[+{more} more]" if more > 0 else "")


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Allows a call only when the caller's certificate role is listed for the method.

    `policy` maps a method or service prefix ("/strife.admin.NodeAdmin/") to the roles allowed;
    a method no entry covers is refused, so a new RPC is closed until someone opens it.
    """

    def __init__(self, policy, authenticate=None):
        self._policy = sorted(policy.items(), key=lambda item: -len(item[0]))
        self.authenticate = authenticate  # async (identity, metadata dict, context, method)
        self._wrapped = {}  # method -> (handler, handler with the guard)

    def roles_for(self, method):
        for prefix, roles in self._policy:
            if method.startswith(prefix):
                return roles
        return frozenset()

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:  # built once per method, not per call
            wrapped = self._wrapped[method] = (handler, _wrap(handler, self._guard(method)))
        return wrapped[1]

    def _guard(self, method):
        roles = self.roles_for(method)
        name = method.rsplit("/", 1)[-1]

        async def guarded(behaviour, request, context: grpc.aio.ServicerContext):
            identity = tls.peer_identity(context)
            if identity is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
            if identity.role not in roles:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{identity.name} ({identity.role}) may not call {name}")
            if self.authenticate is not None:
                await self.authenticate(identity, dict(context.invocation_metadata() or ()), context, method)
            return await behaviour(request, context)

        return guarded


class CallLogInterceptor(grpc.aio.ServerInterceptor):
    """`call method=... caller=... txn_id=... amount_minor=... code=OK ms=1.9`, one per call."""

    def __init__(self, node, skip=("/grpc.health.v1.Health/",)):
        self.node = node
        self.skip = skip
        self._wrapped = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if method.startswith(self.skip):
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:  # built once per method, not per call
            name = method.rsplit("/", 1)[-1]
            wrapped = self._wrapped[method] = (handler, _wrap(handler, self._logged(name), self._logged_stream(name)))
        return wrapped[1]

    def _line(self, name, context: grpc.aio.ServicerContext, fields, code, began):
        identity = tls.peer_identity(context)
        call = {"node": self.node, "method": name, "caller": field(identity.name) if identity else "-"}
        call.update(fields)
        call["code"] = code
        call["ms"] = round((time.perf_counter() - began) * 1000, 1)
        log.info("call", call=call)  # a constant message: nothing in `call` is formatted

    def _logged(self, name):
        async def logged(behaviour, request, context: grpc.aio.ServicerContext):
            began = time.perf_counter()
            code = "OK"
            try:
                return await behaviour(request, context)
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                self._line(name, context, _fields(request), code, began)

        return logged

    def _logged_stream(self, name):
        """A line per answer, paired with its request by `sequence` (from its arrival); a stream
        that fails gets a line of its own, with its code."""
        async def logged(behaviour, requests, context: grpc.aio.ServicerContext):
            opened = time.perf_counter()
            asked = {}  # sequence -> (arrival, the request's logged fields)

            async def noted():
                async for request in requests:
                    asked[getattr(request, "sequence", 0)] = (time.perf_counter(), _fields(request))
                    yield request
            try:
                async for answer in behaviour(noted(), context):
                    began, fields = asked.pop(getattr(answer, "sequence", 0), (opened, ()))
                    status = getattr(answer, "status", 0)
                    self._line(name, context, fields, _CODE_NAMES.get(status, "UNKNOWN"), began)
                    yield answer
            except (GeneratorExit, asyncio.CancelledError):  # the caller went away
                self._line(name, context, (), "CANCELLED", opened)
                raise
            except BaseException:
                status = context.code()
                self._line(name, context, (), status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN", opened)
                raise

        return logged


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
