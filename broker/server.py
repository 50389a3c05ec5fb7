"""The asyncio TCP server: framing, pipelining and dispatch.

Each connection reads frames as fast as the client sends them and handles
requests concurrently, but answers strictly in request order (Kafka clients
pipeline and match responses by order).  Only bytes that cannot be framed
close a connection; every framed request gets an answer with a Kafka error
code, and one bad connection never affects another.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Awaitable, Callable

from kafka.protocol.api_key import ApiKey

from . import wire
from .errors import ErrorCode, code_for
from .framing import FrameError, FrameParser
from .metrics import METRICS

log = logging.getLogger("tidelog.server")

CLIENT_HOST: contextvars.ContextVar[str] = contextvars.ContextVar("client_host", default="")

class RequestRefused(Exception):
    """A handler's deliberate whole-request refusal (e.g. NOT_COORDINATOR); answered quietly."""

    def __init__(self, kafka_code: int) -> None:
        super().__init__(f"refused with error code {kafka_code}")
        self.kafka_code = kafka_code


Handler = Callable[[wire.DecodedRequest], Awaitable[object | None]]
MAX_IN_FLIGHT = 256


class KafkaServer:
    def __init__(self, handlers: dict[int, Handler], *, max_request_bytes: int) -> None:
        self.handlers = handlers
        self.max_request_bytes = max_request_bytes
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str, port: int, *, serving: bool = True) -> int:
        """Bind and return the port.  With ``serving=False`` the socket is bound but not
        listening, so clients are refused (and retry) until `serve`: a client that
        connected before the handlers exist would get UNSUPPORTED_VERSION for
        ApiVersions, which librdkafka takes for a pre-0.10 broker."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, start_serving=serving)
        return self._server.sockets[0].getsockname()[1]

    async def serve(self) -> None:
        """Start accepting connections (after `start` with ``serving=False``)."""
        await self._server.start_serving()

    async def stop_accepting(self) -> None:
        # Not wait_closed(): from Python 3.12 it also waits for every open connection.
        if self._server is not None:
            self._server.close()

    async def close_connections(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        await asyncio.gather(*(c.sender for c in connections if c.sender is not None), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _answer(self, payload: memoryview, in_order: asyncio.Lock) -> bytes | None | object:
        try:
            request = wire.decode_request(payload)
        except wire.RequestError as exc:
            log.warning("refused request", extra={"error": str(exc)})
            return wire.failure_response(exc) or _CLOSE
        except wire.UnanswerableRequest:
            return _CLOSE
        # The decoded request holds copies; drop the view so its receive buffer can be
        # reused while this request waits (a produce waits for its flush).
        del payload
        api = _api_name(request.api_key)
        METRICS.requests.labels(api=api).inc()
        handler = self.handlers.get(request.api_key)
        try:
            if handler is None:
                return wire.error_response(request, ErrorCode.UNSUPPORTED_VERSION)
            if request.api_key in _CONCURRENT_APIS:
                body = await handler(request)
            else:
                async with in_order:
                    body = await handler(request)
            if body is None:
                return None
            return wire.encode_response(request, body)
        except RequestRefused as exc:
            return wire.error_response(request, exc.kafka_code)
        except Exception as exc:  # noqa: BLE001 - answer with an error code, keep serving
            METRICS.request_errors.labels(api=api).inc()
            log.exception("request failed", extra={"api": api, "client": request.client_id})
            try:
                return wire.error_response(request, code_for(exc) or ErrorCode.UNKNOWN_SERVER_ERROR)
            except Exception:  # noqa: BLE001 - no answer is encodable; closing is all that is left
                log.exception("cannot encode an error response", extra={"api": api})
                return _CLOSE


class _Connection(asyncio.BufferedProtocol):
    """One client connection: bytes are received straight into the frame parser's
    buffer (no copy between the kernel and the request decoder), requests are
    handled concurrently and answered strictly in arrival order.

    Back-pressure both ways: reading pauses while MAX_IN_FLIGHT requests are
    unanswered, and the sender waits while the transport's write buffer is full.
    """

    def __init__(self, server: KafkaServer) -> None:
        self._server = server
        self._parser = FrameParser(server.max_request_bytes)
        self._replies: asyncio.Queue = asyncio.Queue()
        self._in_flight = 0
        self._reading_paused = False
        self._finished = False
        self._writable = asyncio.Event()
        self._writable.set()
        # Kafka processes a connection's requests in order.  Produce and Fetch may
        # overlap (each only enqueues or waits before answering, and start order
        # is arrival order), but every other API runs to completion before the
        # next one on this connection starts: an OffsetCommit followed by a
        # LeaveGroup must not be applied the other way round.
        self._in_order = asyncio.Lock()
        self._context = contextvars.copy_context()
        self._transport: asyncio.Transport | None = None
        self.sender: asyncio.Task | None = None

    # --- asyncio protocol callbacks ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._context.run(CLIENT_HOST.set, f"/{peer[0]}" if peer else "")
        METRICS.connections.inc()
        self._server._connections.add(self)
        self.sender = asyncio.get_running_loop().create_task(self._send_in_order(), context=self._context)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._parser.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._parser.buffer_updated(nbytes)
            while (frame := self._parser.next_frame()) is not None:
                answer = self._server._answer(frame, self._in_order)
                self._replies.put_nowait(loop.create_task(answer, context=self._context))
                self._in_flight += 1
        except FrameError as exc:
            log.warning("closing connection: unframeable bytes", extra={"error": str(exc)})
            self._finish()
            return
        if self._in_flight >= MAX_IN_FLIGHT and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._finish()
        return True  # keep the transport: the sender answers what arrived, then closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._writable.set()
        METRICS.connections.dec()
        self._server._connections.discard(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- ours ----------------------------------------------------------------------
    def abort(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
        if self._transport is not None:
            self._transport.abort()

    def _finish(self) -> None:
        """No more requests: answer those already received, then close."""
        if self._finished:
            return
        self._finished = True
        self._replies.put_nowait(None)
        if not self._transport.is_closing() and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    async def _send_in_order(self) -> None:
        transport = self._transport
        try:
            while (pending := await self._replies.get()) is not None:
                try:
                    data = await pending
                except Exception:  # noqa: BLE001 - _answer never raises; be safe and close
                    log.exception("request task failed")
                    data = _CLOSE
                self._in_flight -= 1
                if self._reading_paused and not self._finished and self._in_flight <= MAX_IN_FLIGHT // 2:
                    self._reading_paused = False
                    transport.resume_reading()
                if data is None:
                    continue  # acks=0 produce: no response
                if data is _CLOSE:
                    break
                if transport.is_closing():
                    continue  # the peer left; still wait for what it started
                transport.write(data)
                await self._writable.wait()
        except asyncio.CancelledError:
            pass
        finally:
            transport.close()


_CLOSE = object()
_CONCURRENT_APIS = frozenset({ApiKey.Produce, ApiKey.Fetch})


def _api_name(api_key: int) -> str:
    try:
        return ApiKey(api_key).name
    except ValueError:
        return str(api_key)
