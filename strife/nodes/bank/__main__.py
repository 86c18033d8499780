"""Bank node: `python -m strife.nodes.bank --home DIR --name bank1` (started by `strife up`)."""
import asyncio
import functools
from collections.abc import Mapping
from typing import ClassVar

from strife.core import tasks
from strife.deployment import discovery, identities
from strife.deployment.topology import NodeKind
from strife.nodes import runtime
from strife.nodes.bank import resolver
from strife.nodes.bank.ledger import Ledger
from strife.nodes.bank.service import BankService
from strife.observe import bank_steps
from strife.rpc import gw_bank_pb2_grpc


class Bank:
    KIND: ClassVar[NodeKind] = NodeKind.BANK
    ACCEPT: ClassVar[tuple[str, ...]] = (identities.INFRA,)  # the gateway and the operator: a user is refused at the handshake
    authenticate: runtime.Authenticate | None = None  # the role is enough
    POLICY: ClassVar[Mapping[str, frozenset[str]]] = {"/strife.gwbank.Bank/": frozenset({"gateway"})}

    def __init__(self, ctx: runtime.Context) -> None:
        self.ctx = ctx
        ctx.layout.data(ctx.spec.name).mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(ctx.layout.ledger(ctx.spec.name))
        for client in ctx.topology.of_kind("client"):  # opening balances, once per account
            if client.bank == ctx.spec.name:
                self.ledger.open_account_now(client.name, client.balance_minor, deposit_id=f"open:{client.name}")
        self.ledger.start()
        bank_steps.watch_holds(self.ledger, ctx.topology.settings.prepare_timeout)
        self.etcd = discovery.client(ctx.topology, ctx.spec.name)
        settle = functools.partial(resolver.settle_account, self.ledger, self.etcd, ctx.spec.name)
        gw_bank_pb2_grpc.add_BankServicer_to_server(BankService(self.ledger, ctx.failpoints, settle, ctx.stopping),
                                                 ctx.server)
        self.registration = None
        self.resolver = None

    async def start(self) -> None:
        await self.etcd.connect()
        self.resolver = asyncio.create_task(
            resolver.run(self.ledger, self.etcd, self.ctx.spec.name, self.ctx.topology.settings.hold_timeout))
        # Listed only once it can serve: the gateway never routes to a bank that is not ready.
        self.registration = discovery.Registration(
            self.etcd, discovery.BANKS_PREFIX + self.ctx.spec.name, self.ctx.spec.address)
        await self.registration.start()

    async def stop(self) -> None:
        if self.registration:
            await self.registration.withdraw()
        await tasks.cancel(self.resolver)
        await self.etcd.close()
        await self.ledger.close()


if __name__ == "__main__":
    runtime.main(Bank)
