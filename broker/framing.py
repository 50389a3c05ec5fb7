"""Kafka request framing: a byte-stream parser with no I/O (h11 style).

Every Kafka request travels as ``int32 size`` followed by ``size`` payload
bytes.  The socket code receives straight into the parser's buffer
(``get_buffer`` / ``buffer_updated``, the shape of asyncio's
``BufferedProtocol``) or hands it chunks (``feed``), and asks it for
complete payloads; this module never reads a socket, so the tests can drive
it a byte at a time.

Invariants:

* A frame's size prefix is validated as soon as its four bytes are available,
  so an oversize or negative length is rejected before the parser waits for
  (or allocates room for) its payload.
* ``FrameError`` is the only error that means "close the connection": after a
  bad size prefix the stream has no recoverable boundary.  The parser is then
  poisoned and every later call raises the same error.
* Bytes are never moved once received, except the unread tail when a new
  buffer is started.  A buffer is written only past its fill mark, so a frame
  is handed out as a read-only view with no copy, and stays valid after the
  parser has moved on.  Produce payloads therefore cross from the kernel to
  the request decoder without an intermediate copy.
* A retired buffer is reused only once no frame view of it is alive: Python
  refuses to resize a bytearray with live views, which is the test.  Reuse
  spares the page faults of a fresh allocation on every buffer's worth.
"""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")
_PREFIX = _SIZE.size

#: Room offered per receive when no larger frame is pending.  Small enough that an
#: idle connection holds little, large enough that a busy one reads in few calls.
_MIN_RECEIVE = 256 * 1024
#: Retired buffers larger than this (room made for one huge frame) are not kept.
_MAX_SPARE = 4 * 1024 * 1024


def _unviewed(buf: bytearray) -> bool:
    """Whether no memoryview of ``buf`` is alive (a bytearray with views cannot be resized)."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


class FrameError(Exception):
    """The byte stream cannot be split into frames; the connection must close."""

    def __init__(self, message: str, **context: object) -> None:
        if context:
            message = message + " " + " ".join(f"{k}={v}" for k, v in context.items())
        super().__init__(message)


class FrameParser:
    """Splits a byte stream into size-prefixed frames of at most ``max_frame_bytes``."""

    __slots__ = ("_max", "_buf", "_pos", "_end", "_error", "_spare")

    def __init__(self, max_frame_bytes: int) -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise TypeError(f"max_frame_bytes must be an int, got {type(max_frame_bytes).__name__}")
        if max_frame_bytes < 0:
            raise ValueError(f"max_frame_bytes must be >= 0, got {max_frame_bytes}")
        self._max = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0  # read cursor
        self._end = 0  # fill mark: bytes at and after it are free for receiving
        self._error: FrameError | None = None
        self._spare: bytearray | None = None

    @property
    def max_frame_bytes(self) -> int:
        return self._max

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as a frame (for back-pressure and metrics)."""
        return self._end - self._pos

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable room for the next receive; report what was written with `buffer_updated`."""
        if self._error is not None:
            raise self._error
        pending = self._check_pending_size()
        unread = self._end - self._pos
        want = max(_MIN_RECEIVE, sizehint, 0 if pending is None else _PREFIX + pending - unread)
        if len(self._buf) - self._end < want:
            # Start a new buffer holding the unread tail; views of the old one stay valid.
            spare, self._spare = self._spare, None
            needed = unread + want
            # Powers of two, so a retired buffer usually fits the next need.
            fresh = spare if spare is not None and len(spare) >= needed and _unviewed(spare) \
                else bytearray(1 << (needed - 1).bit_length())
            fresh[:unread] = memoryview(self._buf)[self._pos:self._end]
            if _MIN_RECEIVE <= len(self._buf) <= _MAX_SPARE:
                self._spare = self._buf
            self._buf, self._pos, self._end = fresh, 0, unread
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the last `get_buffer` view."""
        if not 0 <= nbytes <= len(self._buf) - self._end:
            raise ValueError(f"buffer_updated({nbytes}) exceeds the room given")
        self._end += nbytes
        self._check_pending_size()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; raises ``FrameError`` if the pending frame's size is invalid."""
        if self._error is not None:
            raise self._error
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                room = self.get_buffer(len(view) - done)
                n = min(len(room), len(view) - done)
                room[:n] = view[done:done + n]
                room.release()
                done += n
                self.buffer_updated(n)

    def next_frame(self) -> memoryview | None:
        """The next complete payload without its size prefix (a read-only view), or None."""
        size = self._check_pending_size()
        if size is None:
            return None
        start = self._pos + _PREFIX
        end = start + size
        if self._end < end:
            return None
        self._pos = end
        return memoryview(self._buf).toreadonly()[start:end]

    def _check_pending_size(self) -> int | None:
        if self._error is not None:
            raise self._error
        if self._end - self._pos < _PREFIX:
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
        self._pos = self._end = 0
        raise self._error
