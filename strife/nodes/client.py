"""Client node: the user's agent that delivers their outbox to the gateway, in order, exactly once.

It holds the outbox's sender lock for its whole life, so `strife client NAME pay` only queues
and waits while it runs. Failpoints: `send` (before the RPC), `after-send` (answered, not recorded).
"""
import asyncio
import sqlite3
from collections.abc import Mapping
from typing import ClassVar

from strife.client import delivery
from strife.client.delivery import SenderLock
from strife.client.gateway_client import GatewayClient
from strife.client.outbox import Outbox
from strife.core import tasks
from strife.deployment import identities
from strife.deployment.topology import NodeKind
from strife.nodes import runtime
from strife.observe import client_steps

POLL = 0.05  # how often the node asks for the sender lock while a CLI holds it


class Client:
    KIND: ClassVar[NodeKind] = NodeKind.CLIENT
    ACCEPT: ClassVar[tuple[str, ...]] = (identities.INFRA,)  # the operator only (health, failpoints)
    authenticate: runtime.Authenticate | None = None  # the role is enough
    POLICY: ClassVar[Mapping[str, frozenset[str]]] = {}

    def __init__(self, ctx: runtime.Context) -> None:
        self.ctx = ctx
        name = ctx.spec.name
        self.outbox = Outbox(ctx.layout.outbox(name))
        self.lock = SenderLock(ctx.layout.sender_lock(name))
        client_steps.watch_outbox(self.outbox, name)
        self.task = None

    async def start(self) -> None:
        self.outbox.listen()  # a payment a CLI queues wakes the delivery loop (strife/client/bell.py)
        self.task = asyncio.create_task(self._deliver_forever())

    async def _deliver_forever(self):
        while not self.lock.try_acquire():  # a CLI is delivering right now; it lets go when done
            await asyncio.sleep(POLL)
        self.ctx.log.info("delivering the outbox (%d pending)", len(self.outbox.pending()))
        async with GatewayClient(self.ctx.topology, self.ctx.spec.name) as client:
            while True:
                try:
                    await delivery.deliver(self.outbox, client, failpoints=self.ctx.failpoints)
                except (OSError, sqlite3.Error) as exc:  # e.g. the outbox busy a moment: keep delivering
                    self.ctx.log.warning("outbox delivery interrupted: %s; retrying", exc)
                    await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await tasks.cancel(self.task)
        self.outbox.close()


if __name__ == "__main__":
    runtime.main(Client)
