"""The standard gRPC health protocol (grpc.health.v1): the probe the launcher uses on every node."""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def probe(channel, timeout=1.0):
    """'SERVING', 'NOT_SERVING', 'UNKNOWN' or 'UNREACHABLE'."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
