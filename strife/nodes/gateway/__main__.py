"""Gateway node: `python -m strife.nodes.gateway --home DIR --name gateway` (started by `strife up`)."""
import asyncio
from collections.abc import Mapping
from typing import ClassVar

import grpc

from strife.core import tasks
from strife.deployment import credentials, discovery, identities
from strife.deployment.topology import NodeKind
from strife.nodes import runtime
from strife.nodes.gateway.banks import BankDirectory
from strife.nodes.gateway.coordinator import Coordinator
from strife.nodes.gateway.service import ClientGatewayService
from strife.nodes.gateway.store import Store
from strife.nodes.gateway.user_directory import UserDirectory
from strife.nodes.gateway.users import Users
from strife.rpc import cl_gw_pb2_grpc


class UntilReady:
    """A servicer that refuses every call with UNAVAILABLE until `ready`: the port opens before the
    gateway knows the banks, and a payment taken then would abort BANK_UNAVAILABLE for nothing.
    Clients retry UNAVAILABLE with the same transaction id."""

    def __init__(self, servicer):
        self._servicer = servicer
        self.ready = False

    def __getattr__(self, method_name):
        method = getattr(self._servicer, method_name)

        async def when_ready(request, context: grpc.aio.ServicerContext):
            if not self.ready:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is starting; try again")
            return await method(request, context)
        return when_ready


class Gateway:
    KIND: ClassVar[NodeKind] = NodeKind.GATEWAY
    ACCEPT: ClassVar[tuple[str, ...]] = (identities.INFRA, identities.USERS)  # users, and the operator
    POLICY: ClassVar[Mapping[str, frozenset[str]]] = {
        "/strife.clgw.ClientGateway/": frozenset({"client", "admin"}),
        "/strife.clgw.ClientGateway/RegisterClient": frozenset({"admin"}),
    }

    def __init__(self, ctx: runtime.Context) -> None:
        self.ctx = ctx
        ctx.layout.data(ctx.spec.name).mkdir(parents=True, exist_ok=True)
        self.store = Store(ctx.layout.gateway_db(ctx.spec.name))
        self.etcd = discovery.client(ctx.topology, ctx.spec.name)
        self.directory = UserDirectory(self.etcd)
        self.users = Users(self.directory)
        self.directory.on_change = self.users.changed
        self.registration = None
        self.banks = BankDirectory(self.etcd, ctx.topology.home, ctx.spec.name, ctx.topology.settings.prepare_timeout)
        self.coordinator = Coordinator(self.store, self.banks, self.etcd, ctx.topology.settings, ctx.failpoints,
                                       shared=len(ctx.topology.of_kind("gateway")) > 1)
        self.clients = UntilReady(
            ClientGatewayService(self.store, self.banks, self.coordinator, self.users, ctx.topology))
        cl_gw_pb2_grpc.add_ClientGatewayServicer_to_server(self.clients, ctx.server)
        self.authenticate: runtime.Authenticate | None = self.users.authenticate
        self.recovery = self.forgetting = None

    async def start(self) -> None:
        await self.etcd.connect()
        await self.directory.start()
        await self.users.seed(self.ctx.topology, credentials.load(self.ctx.topology.home), self.store.legacy_users())
        await self.ctx.failpoints.hit("before-banks")
        # One watch, kept for the life of the process: no etcd read per request. It returns once
        # the list of banks has been read; only then are client calls taken (and SERVING reported).
        await self.banks.start()
        self.clients.ready = True
        # listed for operators (`strife status`, etcdctl); clients take the gateways from the topology
        self.registration = discovery.Registration(self.etcd, discovery.GATEWAYS_PREFIX + self.ctx.spec.name,
                                                   self.ctx.spec.address)
        await self.registration.start()
        self.recovery = asyncio.create_task(self.coordinator.run_recovery())
        self.forgetting = asyncio.create_task(self.coordinator.run_forgetting())

    async def stop(self) -> None:
        await tasks.cancel(self.forgetting)
        await tasks.cancel(self.recovery)
        if self.registration is not None:
            await self.registration.withdraw()
        await self.directory.stop()
        await self.banks.stop()
        await self.etcd.close()
        await self.store.close()
        self.users.close()


if __name__ == "__main__":
    runtime.main(Gateway)
