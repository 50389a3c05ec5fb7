"""Kafka request framing: a byte-stream parser with no I/O (h11 style).

Every Kafka request travels as ``int32 size`` followed by ``size`` payload
bytes.  The socket code feeds whatever bytes arrive into a ``FrameParser`` and
asks it for complete payloads; this module never reads a socket, so the tests
can drive it a byte at a time.

Invariants:

* A frame's size prefix is validated as soon as its four bytes are available --
  in ``feed`` as well as in ``next_frame`` -- so an oversize or negative length
  is rejected before the parser waits for (and buffers) its payload.
* ``FrameError`` is the only error that means "close the connection": after a
  bad size prefix the stream has no recoverable boundary.  The parser is then
  poisoned and every later call raises the same error.
* Buffering is linear: bytes are appended to one ``bytearray`` and consumed by
  advancing a read cursor; consumed bytes are dropped only when they make up at
  least half of the buffer, so each byte is moved a bounded number of times no
  matter how the stream is chunked.
"""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")
_PREFIX = _SIZE.size

# Consumed bytes below this are not worth a memmove on their own.
_COMPACT_MIN = 64 * 1024


class FrameError(Exception):
    """The byte stream cannot be split into frames; the connection must close."""

    def __init__(self, message: str, **context: object) -> None:
        if context:
            message = message + " " + " ".join(f"{k}={v}" for k, v in context.items())
        super().__init__(message)


class FrameParser:
    """Splits a byte stream into size-prefixed frames of at most ``max_frame_bytes``."""

    __slots__ = ("_max", "_buf", "_pos", "_error")

    def __init__(self, max_frame_bytes: int) -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise TypeError(f"max_frame_bytes must be an int, got {type(max_frame_bytes).__name__}")
        if max_frame_bytes < 0:
            raise ValueError(f"max_frame_bytes must be >= 0, got {max_frame_bytes}")
        self._max = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0
        self._error: FrameError | None = None

    @property
    def max_frame_bytes(self) -> int:
        return self._max

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a frame (for back-pressure and metrics)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; raises ``FrameError`` if the pending frame's size is invalid."""
        if self._error is not None:
            raise self._error
        self._buf += data
        self._check_pending_size()

    def next_frame(self) -> bytes | None:
        """The next complete payload without its size prefix, or None until more bytes arrive."""
        size = self._check_pending_size()
        if size is None:
            return None
        start = self._pos + _PREFIX
        end = start + size
        if len(self._buf) < end:
            return None
        # One copy out of the buffer; the caller may keep the frame while the
        # buffer is compacted or grows underneath.
        with memoryview(self._buf) as view:
            frame = bytes(view[start:end])
        self._pos = end
        self._compact()
        return frame

    def _check_pending_size(self) -> int | None:
        if self._error is not None:
            raise self._error
        if len(self._buf) - self._pos < _PREFIX:
            return None
        (size,) = _SIZE.unpack_from(self._buf, self._pos)
        if 0 <= size <= self._max:
            return size
        if size < 0:
            self._error = FrameError("negative frame size", size=size)
        else:
            self._error = FrameError("frame exceeds limit", size=size, max_frame_bytes=self._max)
        # Nothing after a bad prefix can be framed again; free the memory now.
        self._buf = bytearray()
        self._pos = 0
        raise self._error

    def _compact(self) -> None:
        pos = self._pos
        if pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif pos >= _COMPACT_MIN and pos * 2 >= len(self._buf):
            del self._buf[:pos]
            self._pos = 0
