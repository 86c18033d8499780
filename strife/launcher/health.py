"""The standard gRPC health protocol (grpc.health.v1): the probe the launcher uses on every node."""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strife.core.headers import HEALTH_REASON


async def probe(channel, timeout=1.0):
    """'SERVING', 'NOT_SERVING', 'UNKNOWN' or 'UNREACHABLE'; 'NOT_SERVING: <why>' when the node
    gives a reason."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        call = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)  # pyright: ignore[reportAttributeAccessIssue]
        answer = await call
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        if status != "SERVING":
            reason = dict(await call.trailing_metadata() or ()).get(HEALTH_REASON)
            if reason:
                return f"{status}: {reason}"
        return status
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"


def split(health):
    """('NOT_SERVING', 'disk full: ...') from what `probe` answered; the reason may be None."""
    status, _, reason = health.partition(": ")
    return status, reason or None
