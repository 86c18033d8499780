"""Failpoints of running nodes, set through each node's NodeAdmin service with the operator's
certificate (the only role allowed to call it)."""

from strife.core.failpoints import STEPS, FailpointError, parse_action
from strife.deployment import identities, tls
from strife.deployment.identities import OPERATOR
from strife.deployment.topology import NodeKind
from strife.rpc import admin_pb2, admin_pb2_grpc


def parse_spec(text):
    """'gateway:after-decision=crash' -> ('gateway', 'after-decision', 'crash')."""
    node, sep, rest = text.partition(":")
    step, sep2, action = rest.partition("=")
    if not (sep and sep2 and node and step and action):
        raise FailpointError(f"{text!r}: write a failpoint as NODE:STEP=ACTION, e.g. bank2:prepare=pause")
    parse_action(action)
    return node, step, action


def check_step(topology, node, step):
    kind = topology.node(node).kind
    if step not in STEPS[kind]:
        raise FailpointError(f"{step!r} is not a step of {node} ({kind}); steps: {', '.join(STEPS[kind]) or 'none'}")


class AdminClient:
    def __init__(self, topology, node):
        spec = topology.node(node)
        trust = identities.trust_for(spec.role if spec.kind == NodeKind.CLIENT else spec.kind)
        self.channel = tls.secure_channel(spec.address, tls.channel_credentials(topology.home, OPERATOR, trust),
                                          spec.name)
        self.stub = admin_pb2_grpc.NodeAdminStub(self.channel)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()

    async def set(self, step, action):
        answer = await self.stub.SetFailpoint(admin_pb2.SetFailpointRequest(
            failpoint=admin_pb2.Failpoint(step=step, action=action)), timeout=5)
        return [(f.step, f.action) for f in answer.failpoints]

    async def clear(self, step=""):
        answer = await self.stub.ClearFailpoints(admin_pb2.ClearFailpointsRequest(step=step), timeout=5)
        return [(f.step, f.action) for f in answer.failpoints]

    async def list(self):
        answer = await self.stub.ListFailpoints(admin_pb2.ListFailpointsRequest(), timeout=5)
        return [(f.step, f.action) for f in answer.failpoints]
