"""Registration's helper that runs a lease keep-alive and a key guard side by side."""
import asyncio

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
