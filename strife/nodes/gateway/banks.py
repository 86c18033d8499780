"""The gateway's view of the banks: addresses from one etcd prefix watch, one channel per bank,
and batching of what is in flight to the same bank: prepares, commits and aborts waiting for the
same bank leave together in one `Exchange` call.

No etcd read per request; a bank that re-registers at another address gets a new link.
"""
import asyncio

from strife.deployment import discovery, tls
from strife.nodes.gateway.batching import Batcher
from strife.rpc import gw_bank_pb2 as gb, gw_bank_pb2_grpc

CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
PHASE2_TIMEOUT = 2.0


class PhaseTwoRefused(Exception):
    """The bank answered but could not apply the decision to this transaction."""


PREPARE, COMMIT, ABORT, TRANSFER = "prepare", "commit", "abort", "transfer"


class BankLink:
    """One bank at one address: a channel, and one batch in flight at a time carrying everything
    else that waits for this bank (one round trip and one fsync at the bank for all of it)."""

    def __init__(self, bank, address, credentials, prepare_timeout):
        self.address = address
        # The bank's certificate must name `bank`: an address swapped in etcd leads nowhere.
        self.channel = tls.secure_channel(address, credentials, bank, options=CHANNEL_OPTIONS)
        self.stub = gw_bank_pb2_grpc.BankStub(self.channel)
        self.prepare_timeout = prepare_timeout
        self._exchange = Batcher(self._send)

    async def prepare(self, leg):
        """The bank's VoteResult for one leg; raises grpc.aio.AioRpcError if it did not answer."""
        return await self._exchange.submit((PREPARE, leg))

    async def decide(self, txn_id, commit):
        """Phase 2 for one transaction; raises if not acknowledged."""
        return await self._exchange.submit((COMMIT if commit else ABORT, txn_id))

    async def transfer(self, transfer):
        """A payment within this bank, in one phase: the bank's TransferResult; raises if it did not answer."""
        return await self._exchange.submit((TRANSFER, transfer))

    async def _send(self, items):
        request = gb.ExchangeRequest()
        lists = {PREPARE: request.prepare, COMMIT: request.commit, ABORT: request.abort,
                 TRANSFER: request.transfer}
        slots = []  # where each item's answer will be: (kind, index in that kind's list)
        for kind, payload in items:
            slots.append((kind, len(lists[kind])))
            lists[kind].append(payload)
        timeout = max(self.prepare_timeout, PHASE2_TIMEOUT) if request.prepare else PHASE2_TIMEOUT
        answer = await self.stub.Exchange(request, timeout=timeout)
        answers = {PREPARE: answer.votes, COMMIT: _acknowledged(answer.commits), ABORT: _acknowledged(answer.aborts),
                   TRANSFER: answer.transfers}
        return [answers[kind][index] for kind, index in slots]


def _acknowledged(results):
    """Phase-2 results: the state reached, or PhaseTwoRefused for a transaction the bank could not move."""
    return [PhaseTwoRefused(r.error) if r.error else r.state for r in results]


class BankDirectory:
    def __init__(self, etcd, home, identity, prepare_timeout):
        self.watch = discovery.PrefixWatch(etcd, discovery.BANKS_PREFIX)
        self._credentials = tls.channel_credentials(home, identity)
        self._prepare_timeout = prepare_timeout
        self._links = {}

    async def start(self):
        await self.watch.start()

    def link(self, bank):
        """The bank's link at its current address, or None when it is not registered."""
        address = self.watch.entries.get(bank)
        if address is None:
            return None
        known = self._links.get(bank)
        if known is None or known.address != address:
            if known is not None:
                asyncio.ensure_future(known.channel.close())  # calls still on it finish or fail on their own
            known = self._links[bank] = BankLink(bank, address, self._credentials, self._prepare_timeout)
        return known

    def stub(self, bank):
        link = self.link(bank)
        return link.stub if link else None

    async def stop(self):
        await self.watch.stop()
        for link in self._links.values():
            await link.channel.close()
