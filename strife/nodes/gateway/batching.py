"""Natural batching: the first request goes out at once; requests that arrive while batches are in
flight wait and leave together in the next one. A single caller pays no extra latency; many
callers share round trips (one RPC, one etcd transaction, one fsync for many requests).
"""
import asyncio


class Batcher:
    def __init__(self, send, max_batch=128, max_in_flight=1):
        """`send(items)` is a coroutine returning one result per item, in order; if it raises,
        every item of that batch gets the exception."""
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue = []
        self._in_flight = 0

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self):
        try:
            while self._queue:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                batch = [(item, future) for item, future in batch if not future.done()]  # callers gone
                if not batch:
                    continue
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
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
        finally:
            self._in_flight -= 1
