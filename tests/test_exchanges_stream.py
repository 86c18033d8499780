"""The gateway's side of the bank's `Exchanges` stream (strife/nodes/gateway/exchanges.py), against a
scripted bank on a real gRPC server: answers matched by sequence whatever their order, a refused
exchange failing alone with its status, a late one failing with DEADLINE_EXCEEDED, and a broken
stream failing what waits on it while the next exchange opens a new one."""
import asyncio

import grpc
import pytest

from strife.nodes.gateway.exchanges import Exchanges
from strife.rpc import gw_bank_pb2 as gb, gw_bank_pb2_grpc


class ScriptedBank(gw_bank_pb2_grpc.BankServicer):
    """Answers an exchange by its first commit id: `later` after the next one, `refuse` with
    FAILED_PRECONDITION, `never` not at all, `break` by ending the stream with UNAVAILABLE."""

    def __init__(self):
        self.streams = 0

    async def Exchanges(self, requests, context):
        self.streams += 1
        held = []
        async for request in requests:
            what = request.commit[0]
            if what == "break":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "bank going away")
            if what == "never":
                continue
            if what == "later":
                held.append(request)
                continue
            if what == "refuse":
                yield gb.ExchangeResponse(sequence=request.sequence, status=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                                          status_detail="not this one")
                continue
            yield gb.ExchangeResponse(sequence=request.sequence, commits=[gb.TxnResult(state=gb.COMMITTED)])
            for late in held:
                yield gb.ExchangeResponse(sequence=late.sequence, aborts=[gb.TxnResult(state=gb.ABORTED)])
            held.clear()


def test_exchanges_are_matched_refused_timed_out_and_survive_a_broken_stream():
    async def main():
        server = grpc.aio.server()
        bank = ScriptedBank()
        gw_bank_pb2_grpc.add_BankServicer_to_server(bank, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        link = Exchanges(gw_bank_pb2_grpc.BankStub(channel))
        try:
            def send(what, timeout=5.0):
                return asyncio.ensure_future(link.exchange(gb.ExchangeRequest(commit=[what]), timeout))

            late = send("later")
            await asyncio.sleep(0)  # sent first, answered second
            first = await send("ok")
            assert [r.state for r in first.commits] == [gb.COMMITTED]
            assert [r.state for r in (await late).aborts] == [gb.ABORTED]

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await send("refuse")
            assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "not this one")

            with pytest.raises(grpc.aio.AioRpcError) as unanswered:
                await send("never", timeout=0.2)
            assert unanswered.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert (await send("ok")).commits  # the stream goes on
            assert bank.streams == 1

            waiting = send("never")
            await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                await send("break")
            assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as also:
                await waiting  # what waited on the broken stream fails at once, not at its timeout
            assert also.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (await send("ok")).commits and bank.streams == 2  # a new stream
        finally:
            link.close()
            await channel.close()
            await server.stop(0)

    asyncio.run(asyncio.wait_for(main(), 30))
