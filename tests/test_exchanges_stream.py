"""The gateway's side of the bank's `Exchanges` stream (strife/nodes/gateway/exchanges.py), against a
scripted bank on a real gRPC server: answers matched by sequence whatever their order, a refused
exchange failing alone with its status, a late one failing with DEADLINE_EXCEEDED, and a broken
stream failing what waits on it while the next exchange opens a new one."""
import asyncio
import contextlib
import gc

import grpc
import pytest

from strife.nodes.gateway.exchanges import Exchanges
from strife.rpc import gw_bank_pb2 as gb, gw_bank_pb2_grpc


class ScriptedBank(gw_bank_pb2_grpc.BankServicer):
    """Answers an exchange by its first commit id: `later` after the next one, `refuse` with
    FAILED_PRECONDITION, `never` not at all, `break` by ending the stream with UNAVAILABLE."""

    def __init__(self):
        self.streams = 0
        self.held_one = asyncio.Event()  # set whenever it reads a `never`

    async def Exchanges(self, requests, context):
        self.streams += 1
        held = []
        async for request in requests:
            what = request.commit[0]
            if what == "break":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "bank going away")
            if what == "never":
                self.held_one.set()
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


@contextlib.asynccontextmanager
async def served(servicer):
    """`Exchanges` to `servicer`, served by a real gRPC server on this loop; all closed afterwards."""
    server = grpc.aio.server()
    gw_bank_pb2_grpc.add_BankServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    link = Exchanges(gw_bank_pb2_grpc.BankStub(channel))
    try:
        yield link
    finally:
        link.close()
        await channel.close()
        await server.stop(0)


def test_exchanges_are_matched_refused_timed_out_and_survive_a_broken_stream():
    async def main():
        bank = ScriptedBank()
        async with served(bank) as link:
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

            bank.held_one.clear()
            waiting = send("never")
            await bank.held_one.wait()  # the bank has it: it waits on the stream that will break
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                await send("break")
            assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as also:
                await waiting  # what waited on the broken stream fails at once, not at its timeout
            assert also.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (await send("ok")).commits and bank.streams == 2  # a new stream

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_closed_stream_fails_what_waits_on_it_with_cancelled_and_leaves_nothing_unretrieved():
    """close() (a bank's new address, or the gateway stopping) while exchanges wait: each fails
    CANCELLED, never a bare CancelledError, and no failed future is left unretrieved; a stream
    closed before its reader ever ran is replaced by a new one."""
    async def main():
        problems = []
        asyncio.get_running_loop().set_exception_handler(  # (gRPC's poller may report on an earlier loop too)
            lambda loop, context: problems.append(context) if "never retrieved" in context["message"] else None)
        bank = ScriptedBank()
        async with served(bank) as link:
            assert (await link.exchange(gb.ExchangeRequest(commit=["ok"]), 5)).commits
            waiting = [asyncio.ensure_future(link.exchange(gb.ExchangeRequest(commit=["never"]), 5))
                       for _ in range(200)]
            await asyncio.sleep(0)  # a turn of the loop: some written, some waiting to write
            link.close()
            results = await asyncio.gather(*waiting, return_exceptions=True)
            assert {type(r) for r in results} == {grpc.aio.AioRpcError}, {type(r) for r in results}
            assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} == {grpc.StatusCode.CANCELLED}

            first = asyncio.ensure_future(link.exchange(gb.ExchangeRequest(commit=["never"]), 0.5))
            await asyncio.sleep(0)  # the exchange opened a new stream; its reader has not run yet
            link.close()
            with pytest.raises(grpc.aio.AioRpcError) as closed:
                await first
            assert closed.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert (await link.exchange(gb.ExchangeRequest(commit=["ok"]), 5)).commits  # a new stream again
            assert bank.streams >= 2  # (the stream closed before it started may never have reached the bank)
        del waiting, results
        gc.collect()
        await asyncio.sleep(0)
        assert not problems, problems

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_stopping_bank_answers_what_it_took_ends_the_stream_and_takes_nothing_more(tmp_path):
    """As the bank stops (its server takes no more calls), the exchange it is applying is answered
    and the stream ends; the gateway's next exchange fails UNAVAILABLE, unapplied."""
    from strife.core.failpoints import Failpoints
    from strife.nodes.bank.ledger import Ledger
    from strife.nodes.bank.service import BankService

    async def main():
        ledger = Ledger(tmp_path / "ledger.db")
        ledger.open_account_now("alice", 1000)
        ledger.start()
        reached = asyncio.Event()
        failpoints = Failpoints([("before-prepare", "pause")], on_hit=lambda step, action: reached.set())

        async def settle(account):
            pass
        service = BankService(ledger, failpoints, settle)

        def prepare(txn_id):
            return gb.ExchangeRequest(prepare=[gb.Leg(txn_id=txn_id, account="alice", amount_minor=10,
                                                      direction=gb.DEBIT)])
        try:
            async with served(service) as link:
                taken = asyncio.ensure_future(link.exchange(prepare("t1"), 10))
                await reached.wait()  # t1 is being applied, paused before its hold
                service.stopping.set()
                failpoints.clear("before-prepare")
                assert [v.vote for v in (await taken).votes] == [gb.YES]
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await link.exchange(prepare("t2"), 10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            return [(txn, state) for txn, state in ledger.reader.execute("SELECT txn_id, state FROM holds")]
        finally:
            await ledger.close()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [("t1", "PREPARED")]
