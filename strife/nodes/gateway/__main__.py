"""Gateway node: `python -m strife.nodes.gateway --home DIR --name gateway` (started by `strife up`)."""
import asyncio

from strife import discovery, tasks
from strife.launcher import credentials
from strife.nodes import runtime
from strife.nodes.gateway.banks import BankDirectory
from strife.nodes.gateway.coordinator import Coordinator
from strife.nodes.gateway.service import ClientGatewayService
from strife.nodes.gateway.store import Store
from strife.nodes.gateway.users import Users
from strife.rpc import cl_gw_pb2_grpc


class Gateway:
    KIND = "gateway"
    POLICY = {
        "/strife.clgw.ClientGateway/": frozenset({"client", "admin"}),
        "/strife.clgw.ClientGateway/RegisterClient": frozenset({"admin"}),
    }

    def __init__(self, ctx):
        self.ctx = ctx
        data = ctx.layout.data(ctx.spec.name)
        data.mkdir(parents=True, exist_ok=True)
        self.store = Store(data / "gateway.db")
        self.users = Users(self.store)
        self.users.seed(ctx.topology, credentials.load(ctx.topology.home))
        self.etcd = discovery.client(ctx.topology, ctx.spec.name)
        self.banks = BankDirectory(self.etcd, ctx.topology.home, ctx.spec.name, ctx.topology.settings.prepare_timeout)
        self.coordinator = Coordinator(self.store, self.banks, self.etcd, ctx.topology.settings, ctx.failpoints)
        cl_gw_pb2_grpc.add_ClientGatewayServicer_to_server(
            ClientGatewayService(self.store, self.banks, self.coordinator, self.users, ctx.topology), ctx.server)
        self.authenticate = self.users.authenticate
        self.recovery = None

    async def start(self):
        await self.etcd.connect()
        # One watch, kept for the life of the process: no etcd read per request.
        await self.banks.start()
        self.recovery = asyncio.create_task(self.coordinator.run_recovery())

    async def stop(self):
        await tasks.cancel(self.recovery)
        await self.banks.stop()
        await self.etcd.close()
        await self.store.close()
        self.users.close()


if __name__ == "__main__":
    runtime.main(Gateway)
