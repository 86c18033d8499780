"""The gateway's view of the banks: addresses from one etcd prefix watch, one channel per bank.

No etcd read per request; a bank that re-registers at another address gets a new channel.
"""
import asyncio

import grpc

from strife import discovery, tls
from strife.rpc import gw_bank_pb2_grpc

CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


class BankDirectory:
    def __init__(self, etcd, home, identity):
        self.watch = discovery.PrefixWatch(etcd, discovery.BANKS_PREFIX)
        self._credentials = tls.channel_credentials(home, identity)
        self._stubs = {}  # bank -> (address, channel, stub)

    async def start(self):
        await self.watch.start()

    def stub(self, bank):
        """A stub for the bank's current address, or None when it is not registered."""
        address = self.watch.entries.get(bank)
        if address is None:
            return None
        known = self._stubs.get(bank)
        if known is None or known[0] != address:
            if known is not None:
                asyncio.ensure_future(known[1].close())  # calls still on it finish or fail on their own
            channel = grpc.aio.secure_channel(address, self._credentials, options=CHANNEL_OPTIONS)
            known = self._stubs[bank] = (address, channel, gw_bank_pb2_grpc.BankStub(channel))
        return known[2]

    async def stop(self):
        await self.watch.stop()
        for _, channel, _ in self._stubs.values():
            await channel.close()
