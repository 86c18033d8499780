"""Concurrent random payments among the topology's clients, each with its own id, every answer kept."""
import asyncio
import dataclasses
import random
import time

import grpc

from strife.client.gateway_client import GatewayClient
from strife.core.outcomes import Outcome

RETRY_FIRST, RETRY_MAX = 0.05, 0.5  # seconds between two tries of a payment without an answer


@dataclasses.dataclass
class Sent:
    txn_id: str
    payer: str
    payee: str
    amount_minor: int
    outcome: str = "unknown"   # committed | aborted | unknown (no definite answer yet)
    sent_at: float = dataclasses.field(default_factory=time.monotonic)
    answered_at: float | None = None  # monotonic, when the definite answer came


class Workload:
    def __init__(self, topology, users, seed, nonce, concurrency):
        self.topology, self.users = topology, users
        self.rng = random.Random(seed)
        self.nonce, self.concurrency = nonce, concurrency
        self.sent = []
        self.clients = {}

    async def __aenter__(self):
        self.clients = {u: GatewayClient(self.topology, u) for u in self.users}
        return self

    async def __aexit__(self, *exc):
        for client in self.clients.values():
            await client.close()

    async def run(self, stop):
        await asyncio.gather(*(self._worker(w, stop) for w in range(self.concurrency)))

    async def _worker(self, worker, stop):
        count = 0
        while not stop.is_set():
            payer, payee = self.rng.sample(self.users, 2)
            sent = Sent(f"torture-{self.nonce}-{worker}-{count}", payer, payee, self.rng.randint(1, 2500))
            count += 1
            self.sent.append(sent)
            # as a client would: the same payment again until it has its answer, not a new one
            # every 50 ms while the gateway is away (each would be one more without an answer)
            delay = RETRY_FIRST
            while not stop.is_set():
                await self.settle(sent, timeout=3.0)
                if sent.outcome != "unknown":
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def settle(self, sent, timeout):
        """Ask once; a definite answer sets the outcome, anything else leaves it unknown."""
        try:
            answer = await self.clients[sent.payer].pay(sent.payee, sent.amount_minor, sent.txn_id, timeout=timeout)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)  # the gateway is away: do not spin
            return
        outcome = Outcome.of_number(answer.outcome)
        if outcome in (Outcome.COMMITTED, Outcome.ABORTED):
            sent.outcome = outcome.word
        if sent.outcome != "unknown" and sent.answered_at is None:
            sent.answered_at = time.monotonic()

    def unknown(self):
        return [s for s in self.sent if s.outcome == "unknown"]
