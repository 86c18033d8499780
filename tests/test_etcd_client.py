"""Strife's etcd client (strife/deployment/discovery.py) against a real etcd: what it sends again."""
import functools

import grpc

from strife.deployment import discovery

from tests.helpers import etcd_as

KEY = "/strife/test/future-revision"


def test_a_read_at_a_revision_the_member_has_not_reached_is_sent_again(live):
    """The audit reads all decisions at the revision its first page was read at; with one member
    behind (seen in CI under partitions), the next page answered "required revision is a future
    revision" and the torture's audit ended with a traceback. The member catches up within moments,
    so the read is sent again, as for a timeout."""
    async def work(etcd):
        kv, refused = etcd.kv, []
        original = functools.partial(type(kv)._rpc, kv)  # etcd3aio's, without Strife's attempts

        async def first_ahead_of_etcd(call, request, **options):
            try:
                return await original(call, request, **options)
            except grpc.aio.AioRpcError as error:
                refused.append((error.code(), error.details()))
                await kv.put(KEY, "caught up")  # now the revision asked for exists
                raise
        next_revision = (await kv.get(KEY, timeout=5)).header.revision + 1
        kv._rpc = discovery._in_attempts(first_ahead_of_etcd)
        try:
            answer = await kv.get(KEY, revision=next_revision, timeout=5)
        finally:
            await kv.delete(KEY, timeout=5)
        return refused, answer.kvs[0].value.decode()
    refused, value = etcd_as(live.home, work)
    assert refused == [(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")]
    assert value == "caught up"
