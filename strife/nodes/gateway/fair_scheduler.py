"""One worker thread shared fairly: a queue per key, the keys served round-robin, each queue bounded.

The gateway runs scrypt (slow and 16 MB on purpose) on a single thread. First come, first served,
one user's flood of password checks would sit in front of everyone else's; served round-robin, a
check waits for at most one job of each other key that has work queued.
"""
import asyncio
import collections
import concurrent.futures
import dataclasses


class QueueFull(Exception):
    """The key already has as many jobs waiting as it may."""


@dataclasses.dataclass(eq=False)
class _Job:
    future: asyncio.Future
    fn: object
    args: tuple
    gate: object
    then: object


class FairScheduler:
    def __init__(self, max_waiting=4, thread_name="fair"):
        assert max_waiting >= 1
        self.max_waiting = max_waiting
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._queues = {}                   # key -> deque of waiting jobs
        self._turns = collections.deque()   # the keys in _queues, in the order they are served
        self._worker = None

    def waiting(self, key):
        return len(self._queues.get(key, ()))

    async def run(self, key, fn, *args, gate=None, then=None, bounded=True):
        """`fn(*args)` on the worker thread when `key`'s turn comes; its result or exception.

        `gate()`, if given, runs on the event loop just before `fn` would start: an exception it
        raises reaches the caller instead, and `fn` never runs (a check found useless while it waited).
        `then(result)`, if given, runs on the event loop as soon as `fn` returns, before the next
        job's gate: what it records, the next gate sees.
        Raises QueueFull at once when `bounded` and `key` already has `max_waiting` jobs waiting.
        """
        queue = self._queues.get(key)
        if bounded and queue is not None and len(queue) >= self.max_waiting:
            raise QueueFull(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._turns.append(key)
        job = _Job(asyncio.get_running_loop().create_future(), fn, args, gate, then)
        queue.append(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve())
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller went away (deadline, cancelled RPC): free its place
            if job in queue:
                queue.remove(job)
            raise

    async def _serve(self):
        loop = asyncio.get_running_loop()
        while self._turns:
            key = self._turns.popleft()
            queue = self._queues[key]
            job = queue.popleft() if queue else None
            if queue:
                self._turns.append(key)
            else:
                del self._queues[key]  # a later job for this key queues behind everyone waiting now
            if job is None or job.future.done():
                continue
            try:
                if job.gate is not None:
                    job.gate()
                result = await loop.run_in_executor(self._thread, job.fn, *job.args)
                if job.then is not None:
                    job.then(result)
            except Exception as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)

    def close(self):
        if self._worker is not None:
            self._worker.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)
