"""Natural batching: the first request leaves at once, the rest share the next round trip."""
import asyncio

import pytest

from strife.nodes.gateway.batching import Batcher


async def first_in_flight(batcher, item):
    """Submit `item` and let it leave: two loop passes (the submit, then the batch's send)."""
    task = asyncio.ensure_future(batcher.submit(item))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return task


def test_requests_arriving_during_a_round_trip_share_the_next_one():
    sent = []

    async def send(items):
        sent.append(list(items))
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    async def main():
        batcher = Batcher(send)
        first = await first_in_flight(batcher, 0)
        return [await first] + list(await asyncio.gather(*(batcher.submit(i) for i in range(1, 5))))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert sent == [[0], [1, 2, 3, 4]]


def test_a_failed_round_trip_fails_only_its_own_batch():
    async def send(items):
        await asyncio.sleep(0.01)
        if 0 in items:
            raise ConnectionError("down")
        return [ValueError("refused") if item == 2 else item for item in items]

    async def main():
        batcher = Batcher(send)
        first = await first_in_flight(batcher, 0)
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 4)), return_exceptions=True)
        return [(await asyncio.gather(first, return_exceptions=True))[0], *rest]

    first, *rest = asyncio.run(main())
    assert isinstance(first, ConnectionError)
    assert rest[0] == 1 and isinstance(rest[1], ValueError) and rest[2] == 3


def test_callers_that_gave_up_are_not_sent():
    sent = []

    async def send(items):
        sent.append(list(items))
        await asyncio.sleep(0.05)
        return items

    async def main():
        batcher = Batcher(send)
        first = await first_in_flight(batcher, "a")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await batcher.submit("gone")
        kept = await batcher.submit("b")
        return await first, kept

    assert asyncio.run(main()) == ("a", "b")
    assert sent == [["a"], ["b"]]
