"""The gateway's exchanges with one bank on one long-lived stream (gw_bank's `Exchanges`), rather than
a unary `Exchange` call per batch: a message on an open stream costs the bank about half of a call
(no new HTTP/2 stream, metadata, interceptor chain or access check each time); the gateway, a write
and a read, about what the call cost it (docs/performance.md).

To the caller it is the call it replaces: `exchange(request, timeout)` returns the bank's answer or
raises grpc.aio.AioRpcError with the status that call would have ended with (DEADLINE_EXCEEDED when
no answer came in time, the bank's status when it refused that exchange, the stream's when it
broke). A broken stream fails every exchange waiting on it; the next exchange opens a new one.
"""
import asyncio
import itertools

import grpc

from strife.rpc import gw_bank_pb2 as gb


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class _Stream:
    """One open `Exchanges` call: its writes one at a time, its answers matched by sequence."""

    def __init__(self, stub, on_end):
        self.call = stub.Exchanges()
        self.waiting: dict[int, asyncio.Future] = {}
        self.writing = asyncio.Lock()  # gRPC takes one message at a time on a call
        self.reader = asyncio.ensure_future(self._read(on_end))

    async def _read(self, on_end):
        error = rpc_error(grpc.StatusCode.UNAVAILABLE, "the bank ended the exchanges stream")
        try:
            eof = grpc.aio.EOF  # pyright: ignore[reportAttributeAccessIssue] (stubs omit EOF)
            while (answer := await self.call.read()) is not eof:
                waiter = self.waiting.get(answer.sequence)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
        except grpc.aio.AioRpcError as exc:
            error = exc
        except asyncio.CancelledError:
            error = rpc_error(grpc.StatusCode.CANCELLED, "the exchanges stream was closed")
            raise
        except Exception as exc:  # noqa: BLE001 (whatever broke the stream fails its waiters, not the gateway)
            error = rpc_error(grpc.StatusCode.UNKNOWN, f"exchanges stream: {exc}")
        finally:
            on_end(self)
            self.call.cancel()
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_exception(error)

    async def send(self, request):
        try:
            async with self.writing:
                await self.call.write(request)
        except asyncio.InvalidStateError:  # the call ended before this write: its status says why
            code = await self.call.code()
            raise rpc_error(code, await self.call.details() or code.name) from None


class Exchanges:
    def __init__(self, stub):
        self._stub = stub
        self._stream: _Stream | None = None
        self._numbers = itertools.count(1)

    def _ended(self, stream):
        if self._stream is stream:
            self._stream = None

    async def exchange(self, request: gb.ExchangeRequest, timeout: float) -> gb.ExchangeResponse:
        stream = self._stream
        if stream is None:
            stream = self._stream = _Stream(self._stub, self._ended)
        request.sequence = sequence = next(self._numbers)
        answer = stream.waiting[sequence] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await stream.send(request)  # cancelled mid-write, gRPC cancels the whole call
                response = await answer
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            del stream.waiting[sequence]
        if response.status:
            raise rpc_error(_code(response.status), response.status_detail)
        return response

    def close(self):
        if self._stream is not None:
            self._stream.reader.cancel()


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code(number: int) -> grpc.StatusCode:
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)
