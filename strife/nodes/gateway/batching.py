"""Natural batching: the first request goes out at once; requests that arrive while batches are in
flight wait and leave together in the next one. A single caller pays no extra latency; many
callers share round trips (one RPC, one etcd transaction, one fsync for many requests).

Some requests are urgent (a prepare: a caller waits for it) and others background (phase 2: the
caller has its answer). An urgent request does not wait behind a round trip that carries only
background ones: it leaves at once in a batch of urgent requests. Under load some urgent request
is nearly always in flight, so this adds round trips only where they were idle waiting. The
caller's `urgent` decides what may overtake what (banks.py: not a prepare of an account whose
phase 2 is still on its way).
"""
import asyncio


class Batcher:
    def __init__(self, send, max_batch=128, max_in_flight=1, urgent=None):
        """`send(items)` is a coroutine returning one result per item, in order; if it raises,
        every item of that batch gets the exception. `urgent(item)`, if given, tells the urgent
        items from the background ones."""
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._urgent = urgent
        self._queue = []
        self._in_flight = 0
        self._urgent_in_flight = 0  # batches in flight that carry an urgent item

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            asyncio.ensure_future(self._drain())
        elif self._urgent is not None and self._urgent_in_flight == 0 and self._urgent(item):
            self._urgent_in_flight += 1  # counted now: the next urgent item waits for this batch
            asyncio.ensure_future(self._send_once())
        return await future

    async def _drain(self):
        try:
            while self._queue:
                await self._next_batch()
        finally:
            self._in_flight -= 1

    async def _send_once(self):
        """One batch beside those in flight, of the urgent items queued by now (the others keep
        their place in the queue)."""
        try:
            await self._next_batch(only=self._urgent)
        finally:
            self._urgent_in_flight -= 1

    async def _next_batch(self, only=None):
        if only is None:
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
        else:
            batch = [entry for entry in self._queue if only(entry[0])][:self._max_batch]
            taken = {id(entry) for entry in batch}
            self._queue = [entry for entry in self._queue if id(entry) not in taken]
        batch = [(item, future) for item, future in batch if not future.done()]  # callers gone
        if not batch:
            return
        urgent = only is None and self._urgent is not None and any(self._urgent(item) for item, _ in batch)
        if urgent:
            self._urgent_in_flight += 1
        try:
            results = await self._send([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} answers to a batch of {len(batch)}")
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            if urgent:
                self._urgent_in_flight -= 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
