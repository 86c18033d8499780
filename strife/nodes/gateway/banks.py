"""The gateway's view of the banks: addresses from one etcd prefix watch, one channel per bank,
and batching of what is in flight to the same bank: prepares, commits and aborts waiting for the
same bank leave together in one exchange, on the bank's `Exchanges` stream (exchanges.py).

No etcd read per request; a bank that re-registers at another address gets a new link.
"""
import asyncio
import collections

from strife.deployment import discovery, tls
from strife.nodes.gateway.batching import Batcher
from strife.nodes.gateway.exchanges import Exchanges
from strife.rpc import gw_bank_pb2 as gb, gw_bank_pb2_grpc

CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
PHASE2_TIMEOUT = 2.0


class PhaseTwoRefused(Exception):
    """The bank answered but could not apply the decision to this transaction."""


PREPARE, COMMIT, ABORT, TRANSFER = "prepare", "commit", "abort", "transfer"
URGENT = (PREPARE, TRANSFER)


class BankLink:
    """One bank at one address: a channel, and one batch in flight at a time carrying everything
    else that waits for this bank (one round trip and one fsync at the bank for all of it); a
    second one only for a prepare or transfer when the batch in flight is phase 2 alone."""

    def __init__(self, bank, address, credentials, prepare_timeout):
        self.address = address
        # The bank's certificate must name `bank`: an address swapped in etcd leads nowhere.
        self.channel = tls.secure_channel(address, credentials, bank, options=CHANNEL_OPTIONS)
        self.stub = gw_bank_pb2_grpc.BankStub(self.channel)
        self.exchanges = Exchanges(self.stub)
        self.prepare_timeout = prepare_timeout
        self._exchange = Batcher(self._send, urgent=self._urgent)
        # accounts whose phase 2 is queued or in flight here (None: a transaction whose account is
        # not known). A prepare of such an account waits its turn: the commit of a credit or the
        # abort of a debit frees funds it may need, which the bank must have applied first.
        self._settling = collections.Counter()

    def _urgent(self, item):
        """A prepare or transfer (a caller waits for it) may leave beside a batch of phase 2
        alone, unless that phase 2 may change what its accounts can spend."""
        kind, _, accounts = item
        return kind in URGENT and None not in self._settling and not any(a in self._settling for a in accounts)

    async def prepare(self, leg):
        """The bank's VoteResult for one leg; raises grpc.aio.AioRpcError if it did not answer."""
        return await self._exchange.submit((PREPARE, leg, (leg.account,)))

    async def decide(self, txn_id, commit, account=None):
        """Phase 2 for one transaction (`account`: the one it touches here, if known); raises if
        not acknowledged."""
        self._settling[account] += 1
        try:
            return await self._exchange.submit((COMMIT if commit else ABORT, txn_id, ()))
        finally:
            self._settling[account] -= 1
            if not self._settling[account]:
                del self._settling[account]

    async def transfer(self, transfer):
        """A payment within this bank, in one phase: the bank's TransferResult; raises if it did not answer."""
        return await self._exchange.submit((TRANSFER, transfer, (transfer.payer, transfer.payee)))

    async def _send(self, items):
        request = gb.ExchangeRequest()
        lists = {PREPARE: request.prepare, COMMIT: request.commit, ABORT: request.abort,
                 TRANSFER: request.transfer}
        slots = []  # where each item's answer will be: (kind, index in that kind's list)
        for kind, payload, _ in items:
            slots.append((kind, len(lists[kind])))
            lists[kind].append(payload)
        timeout = max(self.prepare_timeout, PHASE2_TIMEOUT) if request.prepare else PHASE2_TIMEOUT
        answer = await self.exchanges.exchange(request, timeout)
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
                known.exchanges.close()  # what waits on it fails (CANCELLED) and is tried again here
                asyncio.ensure_future(known.channel.close())
            known = self._links[bank] = BankLink(bank, address, self._credentials, self._prepare_timeout)
        return known

    def stub(self, bank):
        link = self.link(bank)
        return link.stub if link else None

    async def stop(self):
        await self.watch.stop()
        for link in self._links.values():
            link.exchanges.close()
            await link.channel.close()
