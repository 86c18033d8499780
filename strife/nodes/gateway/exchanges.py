"""The gateway's exchanges with one bank on one long-lived stream (gw_bank's `Exchanges`), rather than
a unary `Exchange` call per batch: a message on an open stream costs the bank about half of a call
(no new HTTP/2 stream, metadata, interceptor chain or access check each time); the gateway, a write
and a read, about what the call cost it (docs/performance.md).

To the caller it is the call it replaces: `exchange(request, timeout)` returns the bank's answer or
raises grpc.aio.AioRpcError with the status that call would have ended with (DEADLINE_EXCEEDED when
no answer came in time, the bank's status when it refused that exchange, the stream's when it
broke). A broken stream fails every exchange waiting on it; the next exchange opens a new one.

Unlike the call, a message carries no deadline to the bank: an exchange the gateway stopped
waiting for (a paused bank) is still applied when the bank gets to it. The protocol allows that:
a prepare whose payment was aborted meanwhile meets the abort sent after it, which releases its
hold or, applied first, is remembered so that the prepare votes NO (presumed abort); a transfer
answered "pending" is asked again with its id.
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
        self.error: grpc.aio.AioRpcError | None = None  # why it ended, once it has
        self._on_end = on_end
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
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
            error = _closed()
            raise
        except Exception as exc:  # noqa: BLE001 (whatever broke the stream fails its waiters, not the gateway)
            error = rpc_error(grpc.StatusCode.UNKNOWN, f"exchanges stream: {exc}")
        finally:
            self.end(error)

    def end(self, error):
        """Done with this stream: what waits on it fails with `error` (at once, not at its timeout)."""
        if self.error is None:
            self.error = error
            self._on_end(self)
        else:
            error = self.error  # the first reason stands
        if self.reader is not asyncio.current_task():
            self.reader.cancel()  # a reader not started yet never runs its clean-up: this is it
        self.call.cancel()
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_exception(_copy(error))

    async def send(self, request):
        try:
            async with self.writing:
                if self.error is not None:
                    raise _copy(self.error)
                await self.call.write(request)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller's own timeout, or the caller cancelled
            raise _copy(self.error or _closed()) from None  # the stream was closed under this write
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            # the call ended before or during this write: why it ended, as the reader learns it
            if self.error is not None or self.call.cancelled():
                raise _copy(self.error or _closed()) from None
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
            if answer.done() and not answer.cancelled():
                answer.exception()  # seen: a stream that ended under a failed write set it too
            else:
                answer.cancel()
        if response.status:
            raise rpc_error(_code(response.status), response.status_detail)
        return response

    def close(self):
        """Done with this bank's stream (its address changed, or the gateway stops)."""
        if self._stream is not None:
            self._stream.end(_closed())


def _closed() -> grpc.aio.AioRpcError:
    return rpc_error(grpc.StatusCode.CANCELLED, "the exchanges stream was closed")


def _copy(error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """A fresh exception each time it is raised (one instance raised twice keeps both tracebacks)."""
    return rpc_error(error.code(), error.details() or "")
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code(number: int) -> grpc.StatusCode:
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)
