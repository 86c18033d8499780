"""Gateway node: the two-phase-commit coordinator between banks."""
from strife import discovery
from strife.nodes import runtime


class Gateway:
    KIND = "gateway"
    POLICY = {}

    def __init__(self, ctx):
        self.ctx = ctx
        self.etcd = discovery.client(ctx.topology, ctx.spec.name)
        self.banks = None

    async def start(self):
        await self.etcd.connect()
        # One watch, kept for the life of the process: no etcd read per request.
        self.banks = discovery.PrefixWatch(self.etcd, discovery.BANKS_PREFIX)
        await self.banks.start()

    async def stop(self):
        if self.banks:
            await self.banks.stop()
        await self.etcd.close()


if __name__ == "__main__":
    runtime.main(Gateway)
