"""Bank node: holds accounts and takes part in two-phase commit (participant)."""
from strife import discovery
from strife.nodes import runtime


class Bank:
    KIND = "bank"
    POLICY = {}

    def __init__(self, ctx):
        self.ctx = ctx
        self.etcd = discovery.client(ctx.topology, ctx.spec.name)
        self.registration = None

    async def start(self):
        await self.etcd.connect()
        # Listed only once it can serve: the gateway never routes to a bank that is not ready.
        self.registration = discovery.Registration(
            self.etcd, discovery.BANKS_PREFIX + self.ctx.spec.name, self.ctx.spec.address)
        await self.registration.start()

    async def stop(self):
        if self.registration:
            await self.registration.withdraw()
        await self.etcd.close()


if __name__ == "__main__":
    runtime.main(Bank)
