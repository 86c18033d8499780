"""NodeAdmin: failpoints of a running node, for operators (chaos)."""
import grpc

from strife.core.failpoints import FailpointError
from strife.rpc import admin_pb2, admin_pb2_grpc


class NodeAdmin(admin_pb2_grpc.NodeAdminServicer):
    def __init__(self, failpoints):
        self.failpoints = failpoints

    def _list(self):
        return admin_pb2.FailpointList(failpoints=[admin_pb2.Failpoint(step=s, action=a)
                                                   for s, a in self.failpoints.items()])

    async def SetFailpoint(self, request, context: grpc.aio.ServicerContext):
        try:
            self.failpoints.set(request.failpoint.step, request.failpoint.action)
        except FailpointError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return self._list()

    async def ClearFailpoints(self, request, context: grpc.aio.ServicerContext):
        self.failpoints.clear(request.step or None)
        return self._list()

    async def ListFailpoints(self, request, context: grpc.aio.ServicerContext):
        return self._list()
