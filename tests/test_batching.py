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


def test_an_urgent_request_does_not_wait_behind_a_batch_of_background_ones():
    """A prepare (urgent) leaves at once while only phase-2 items (background) are in flight; behind
    an urgent batch, or when it is background itself, a request waits for the next round trip."""
    sent, release = [], {}

    async def send(items):
        sent.append(list(items))
        release[tuple(items)] = gate = asyncio.Event()
        await gate.wait()
        return items

    async def main():
        batcher = Batcher(send, urgent=lambda item: item.startswith("prepare"))
        commit = await first_in_flight(batcher, "commit-1")
        prepare = await first_in_flight(batcher, "prepare-2")           # beside the commit batch
        late = [await first_in_flight(batcher, item) for item in ("prepare-3", "commit-4")]  # behind both
        assert sent == [["commit-1"], ["prepare-2"]]
        release[("prepare-2",)].set()
        assert await prepare == "prepare-2"
        await asyncio.sleep(0)
        assert sent == [["commit-1"], ["prepare-2"]]  # one batch in flight still: the rest wait for it
        release[("commit-1",)].set()
        assert await commit == "commit-1"
        for _ in range(5):
            await asyncio.sleep(0)
        release[("prepare-3", "commit-4")].set()
        return [await task for task in late]

    assert asyncio.run(main()) == ["prepare-3", "commit-4"]
    assert sent == [["commit-1"], ["prepare-2"], ["prepare-3", "commit-4"]]


def test_a_prepare_overtakes_phase_two_only_of_other_accounts():
    """At a bank link: a prepare leaves beside a phase-2 batch in flight, unless that phase 2
    touches its account (a commit of a credit frees funds the prepare may need: the bank must
    apply it first), or an account not known."""
    from collections import Counter

    from strife.nodes.gateway.banks import BankLink
    from strife.rpc import gw_bank_pb2 as gb

    sent, gates = [], []

    async def send(items):
        sent.append([(kind, getattr(payload, "account", payload)) for kind, payload, _ in items])
        gates.append(gate := asyncio.Event())
        await gate.wait()
        return [gb.VoteResult(vote=gb.YES) if kind == "prepare" else gb.COMMITTED for kind, _, _ in items]

    async def main():
        link = object.__new__(BankLink)  # its batching only: no channel
        link._settling = Counter()
        link._exchange = Batcher(send, urgent=link._urgent)
        commit = asyncio.ensure_future(link.decide("t1", commit=True, account="bob"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        bob = asyncio.ensure_future(link.prepare(gb.Leg(txn_id="t2", account="bob", amount_minor=1)))
        carol = asyncio.ensure_future(link.prepare(gb.Leg(txn_id="t3", account="carol", amount_minor=1)))
        for _ in range(3):
            await asyncio.sleep(0)
        first = [list(batch) for batch in sent]
        for gate in gates:
            gate.set()
        await asyncio.gather(commit, carol)
        for _ in range(5):
            await asyncio.sleep(0)
        gates[-1].set()
        await bob
        unknown = asyncio.ensure_future(link.decide("t4", commit=False))  # account not known: nothing overtakes
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        dave = asyncio.ensure_future(link.prepare(gb.Leg(txn_id="t5", account="dave", amount_minor=1)))
        for _ in range(3):
            await asyncio.sleep(0)
        waiting = len(sent)
        for gate in gates:
            gate.set()
        await unknown
        for _ in range(5):
            await asyncio.sleep(0)
        gates[-1].set()
        await dave
        return first, waiting, link._settling

    first, waiting, settling = asyncio.run(main())
    assert first == [[("commit", "t1")], [("prepare", "carol")]]  # bob's prepare waits for bob's commit
    assert sent[2] == [("prepare", "bob")]
    assert waiting == 4 and sent[3:] == [[("abort", "t4")], [("prepare", "dave")]]
    assert not settling
