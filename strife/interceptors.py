"""Server interceptors, one concern each, applied to every method of a node:

- AccessInterceptor: who may call what, from the verified peer certificate (role = OU), plus an
  optional node-specific `authenticate` step (the gateway checks user name and password).
- CallLogInterceptor: one structured line per call. It reads only chosen request fields
  (txn id, amount, payee): metadata, where the password travels, is never logged.
"""
import logging
import time

import grpc

from strife import tls

EVERYONE = frozenset({"etcd", "bank", "gateway", "client", "admin", "operator"})
LOGGED_FIELDS = ("txn_id", "amount_minor", "payee", "account", "username")
LEG_LISTS = ("legs", "prepare")               # batches of legs: txn:account:amount each
ID_LISTS = ("txn_ids", "commit", "abort")     # batches of transaction ids

log = logging.getLogger("strife.calls")


def _wrap(handler, around):
    """Rebuild `handler` so that its behaviour runs inside `around(behaviour, request, context)`."""
    if handler is None:
        return None
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            return await around(inner, request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                   handler.response_serializer)
    if handler.unary_stream:
        inner = handler.unary_stream

        async def unary_stream(request, context):
            async def collect(request, context):
                return [item async for item in inner(request, context)]
            for item in await around(collect, request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                    handler.response_serializer)
    return handler  # client-streaming methods: none in Strife's protos


def _fields(request):
    """The loggable fields of a request: chosen names only, batches as comma-joined ids."""
    parts = [f"{f}={getattr(request, f)}" for f in LOGGED_FIELDS if getattr(request, f, None) not in (None, "", 0)]
    for name in LEG_LISTS:
        legs = getattr(request, name, None)
        if legs:
            parts.append(f"{name}=" + ",".join(f"{leg.txn_id}:{leg.account}:{leg.amount_minor}" for leg in legs))
    for name in ID_LISTS:
        txn_ids = getattr(request, name, None)
        if txn_ids:
            parts.append(f"{name}=" + ",".join(txn_ids))
    return " ".join(parts)


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

        async def guarded(behaviour, request, context):
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
            wrapped = self._wrapped[method] = (handler, _wrap(handler, self._logged(method.rsplit("/", 1)[-1])))
        return wrapped[1]

    def _logged(self, name):
        async def logged(behaviour, request, context):
            began = time.perf_counter()
            code = "OK"
            try:
                return await behaviour(request, context)
            except BaseException:
                status = context.code()
                code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                identity = tls.peer_identity(context)
                log.info("call node=%s method=%s caller=%s %s code=%s ms=%.1f", self.node, name,
                         identity.name if identity else "-", _fields(request), code,
                         (time.perf_counter() - began) * 1000)

        return logged
