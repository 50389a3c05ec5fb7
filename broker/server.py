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
        self._connections: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, *, serving: bool = True) -> int:
        """Bind and return the port.  With ``serving=False`` the socket is bound but not
        listening, so clients are refused (and retry) until `serve`: a client that
        connected before the handlers exist would get UNSUPPORTED_VERSION for
        ApiVersions, which librdkafka takes for a pre-0.10 broker."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=1 << 20, start_serving=serving)
        return self._server.sockets[0].getsockname()[1]

    async def serve(self) -> None:
        """Start accepting connections (after `start` with ``serving=False``)."""
        await self._server.start_serving()

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def close_connections(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        CLIENT_HOST.set(f"/{peer[0]}" if peer else "")
        METRICS.connections.inc()
        replies: asyncio.Queue = asyncio.Queue(MAX_IN_FLIGHT)
        sender = asyncio.create_task(self._send_in_order(replies, writer))
        parser = FrameParser(self.max_request_bytes)
        # Kafka processes a connection's requests in order.  Produce and Fetch may
        # overlap (each only enqueues or waits before answering, and start order
        # is arrival order), but every other API runs to completion before the
        # next one on this connection starts: an OffsetCommit followed by a
        # LeaveGroup must not be applied the other way round.
        in_order = asyncio.Lock()
        try:
            while True:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                parser.feed(chunk)
                while (frame := parser.next_frame()) is not None:
                    await replies.put(asyncio.ensure_future(self._answer(bytes(frame), in_order)))
        except FrameError as exc:
            log.warning("closing connection: unframeable bytes", extra={"error": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            await replies.put(None)
            try:
                await sender
            except Exception:  # noqa: BLE001 - the peer is gone either way
                pass
            writer.close()
            METRICS.connections.dec()
            self._connections.discard(task)

    async def _send_in_order(self, replies: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            pending = await replies.get()
            if pending is None:
                return
            try:
                data = await pending
            except asyncio.CancelledError:
                return
            except Exception:  # noqa: BLE001 - _answer never raises; be safe and close
                log.exception("request task failed")
                data = _CLOSE
            if data is None:
                continue  # acks=0 produce: no response
            if data is _CLOSE:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    async def _answer(self, payload: bytes, in_order: asyncio.Lock) -> bytes | None | object:
        try:
            request = wire.decode_request(payload)
        except wire.RequestError as exc:
            log.warning("refused request", extra={"error": str(exc)})
            return wire.failure_response(exc) or _CLOSE
        except wire.UnanswerableRequest:
            return _CLOSE
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


_CLOSE = object()
_CONCURRENT_APIS = frozenset({ApiKey.Produce, ApiKey.Fetch})


def _api_name(api_key: int) -> str:
    try:
        return ApiKey(api_key).name
    except ValueError:
        return str(api_key)
