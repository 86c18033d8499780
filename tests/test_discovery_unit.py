"""Registration's helper that runs a lease keep-alive and a key guard side by side."""
import asyncio
import types

import pytest

from strife.deployment import discovery


def test_when_one_fails_the_other_is_cancelled_too():
    """After an etcd restart the keep-alive fails first; the old lease's guard used to live on and
    fight the new registration, rewriting the key back and forth hundreds of times a second."""
    async def main():
        guard_ended = asyncio.Event()

        async def keep_alive():
            raise ConnectionError("etcd away")

        async def guard():
            try:
                await asyncio.Future()
            finally:
                guard_ended.set()
        with pytest.raises(ConnectionError):
            await discovery._first_of(keep_alive(), guard())
        assert guard_ended.is_set()
    asyncio.run(main())


def test_an_etcd_request_that_hangs_is_sent_again_within_the_callers_timeout():
    """A write a follower forwarded to a leader that just died is never answered (until etcd's own
    5 s timeout): the client sends it again after one attempt's time, to the next member."""
    calls = []

    async def rpc(call, request, *, operation, timeout=None, max_attempts=None):
        calls.append(timeout)
        if len(calls) == 1:
            async with asyncio.timeout(timeout):  # as etcd3aio bounds each attempt
                await asyncio.Future()
        return "answered"

    async def main():
        loop = asyncio.get_running_loop()
        began = loop.time()
        answer = await discovery._in_attempts(rpc)(None, None, operation="KV.Txn", timeout=5.0)
        return answer, loop.time() - began
    answer, took = asyncio.run(main())
    assert answer == "answered" and calls == [discovery.ATTEMPT, discovery.ATTEMPT]
    assert took < discovery.ATTEMPT + 0.5

    async def short():  # a caller's timeout shorter than one attempt is left as it is
        return await discovery._in_attempts(rpc)(None, None, operation="KV.Range", timeout=0.2)
    assert asyncio.run(short()) == "answered" and calls[-1] == 0.2


def test_the_etcd_client_reconnects_fast_and_pings_only_our_own_etcd_often():
    for ours, keepalive in ((True, 2000), (False, 10_000)):
        etcd = discovery._Client(["127.0.0.1:2379", "127.0.0.1:2380"])
        discovery._fit_channel(etcd, ours=ours)
        options = dict(etcd._manager.grpc_options)
        assert options["grpc.max_reconnect_backoff_ms"] == 500 and options["grpc.keepalive_time_ms"] == keepalive
        assert options["grpc.lb_policy_name"] == "round_robin"


def test_a_lease_keep_alive_a_member_does_not_answer_is_sent_again_before_the_lease_lapses():
    """A keep-alive stream on an etcd member cut off from its leader (or on a dead connection) is
    never answered. Waiting for it the lease's whole time let the lease lapse and unlisted the bank
    (CI): each attempt now has ATTEMPT, and the next goes on a new stream (to the next member)."""
    streams = []

    class Call:
        def __init__(self, answer):
            self.answer, self.cancelled = answer, False

        async def read(self):
            if self.answer is None:  # the cut-off member
                await asyncio.Future()
            return self.answer

        def cancel(self):
            self.cancelled = True

    class Lease:
        def keep_alive(self, lease_id):
            streams.append(Call(None if not streams else types.SimpleNamespace(TTL=0)))  # then: lease gone
            return streams[-1]

    async def main():
        registration = discovery.Registration(types.SimpleNamespace(lease=Lease()), "/strife/banks/b", "x", ttl=3)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await registration._keep_alive(7)  # returns: the (second) answer says the lease is gone
        return loop.time() - began
    took = asyncio.run(main())
    assert len(streams) == 2 and all(call.cancelled for call in streams)
    assert took < 1 + discovery.ATTEMPT + 0.5  # one refresh interval (ttl/3) and one unanswered attempt
