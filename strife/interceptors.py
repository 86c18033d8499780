"""Server interceptors: who may call what, decided once for every method from the peer certificate."""
import grpc

from strife import tls

EVERYONE = frozenset({"etcd", "bank", "gateway", "client", "admin", "operator"})


def _wrap(handler, guard):
    """Rebuild `handler` so that `guard(context)` runs before its behaviour."""
    if handler is None:
        return None
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            await guard(context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                   handler.response_serializer)
    if handler.unary_stream:
        inner = handler.unary_stream

        async def unary_stream(request, context):
            await guard(context)
            async for item in inner(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                    handler.response_serializer)
    return handler  # streaming requests: none in Strife's protos


class RoleInterceptor(grpc.aio.ServerInterceptor):
    """Allows a call only when the caller's certificate role is listed for the method.

    `policy` maps a method or service prefix ("/strife.admin.NodeAdmin/") to the roles allowed;
    a method no entry covers is refused, so a new RPC is closed until someone opens it.
    """

    def __init__(self, policy):
        self._policy = sorted(policy.items(), key=lambda item: -len(item[0]))

    def roles_for(self, method):
        for prefix, roles in self._policy:
            if method.startswith(prefix):
                return roles
        return frozenset()

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        roles = self.roles_for(method)

        async def guard(context):
            identity = tls.peer_identity(context)
            if identity is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
            if identity.role not in roles:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{identity.name} ({identity.role}) may not call {method}")

        return _wrap(await continuation(handler_call_details), guard)
