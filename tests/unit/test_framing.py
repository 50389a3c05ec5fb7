"""FrameParser: byte-at-a-time, arbitrary chunkings, pipelining and size limits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.broker.framing import FrameError, FrameParser


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def drain(parser: FrameParser) -> list[bytes]:
    frames = []
    while (f := parser.next_frame()) is not None:
        frames.append(f)
    return frames


PAYLOADS = [b"", b"x", b"hello kafka", bytes(range(256)) * 3, b"\x00" * 4]


def test_byte_at_a_time_yields_each_frame_exactly_when_complete() -> None:
    stream = b"".join(frame(p) for p in PAYLOADS)
    boundaries = set()
    end = 0
    for p in PAYLOADS:
        end += 4 + len(p)
        boundaries.add(end)
    parser = FrameParser(max_frame_bytes=4096)
    got = []
    for i in range(len(stream)):
        parser.feed(stream[i : i + 1])
        frames = drain(parser)
        # A frame appears on the very byte that completes it, never earlier.
        assert bool(frames) == (i + 1 in boundaries)
        got += frames
    assert got == PAYLOADS
    assert parser.buffered_bytes == 0


def test_pipelined_frames_in_one_feed() -> None:
    parser = FrameParser(max_frame_bytes=4096)
    parser.feed(b"".join(frame(p) for p in PAYLOADS) + b"\x00\x00")
    assert drain(parser) == PAYLOADS
    # The two bytes of the next size prefix stay buffered.
    assert parser.buffered_bytes == 2
    assert parser.next_frame() is None


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_any_chunking_reassembles_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    parser = FrameParser(max_frame_bytes=300)
    got: list[bytes] = []
    for start, stop in zip(points, points[1:]):
        parser.feed(memoryview(stream)[start:stop])
        got += drain(parser)
    assert got == payloads
    assert parser.buffered_bytes == 0


def test_many_frames_across_compaction_in_odd_chunks() -> None:
    # Enough data that the read cursor passes the compaction threshold many
    # times while a partial frame is pending.
    payloads = [bytes([i % 251]) * (1000 + i % 17) for i in range(3000)]
    stream = b"".join(frame(p) for p in payloads)
    parser = FrameParser(max_frame_bytes=2000)
    got: list[bytes] = []
    for start in range(0, len(stream), 7919):
        parser.feed(stream[start : start + 7919])
        got += drain(parser)
    assert got == payloads


def test_large_frame_in_small_chunks() -> None:
    payload = bytes(range(256)) * 20_000  # ~5 MiB
    parser = FrameParser(max_frame_bytes=len(payload))
    data = frame(payload)
    for start in range(0, len(data), 65536):
        assert parser.next_frame() is None
        parser.feed(data[start : start + 65536])
    assert parser.next_frame() == payload
    assert parser.next_frame() is None


def test_frames_stay_valid_and_read_only_while_the_parser_moves_on() -> None:
    parser = FrameParser(max_frame_bytes=16)
    parser.feed(frame(b"first") + frame(b"sec"))
    first = parser.next_frame()
    parser.feed(frame(b"third") * 100_000)  # several new buffers
    assert first == b"first"
    assert first.readonly
    with pytest.raises(TypeError):
        first[0] = 0  # type: ignore[index]
    assert drain(parser) == [b"sec"] + [b"third"] * 100_000


def receive(parser: FrameParser, stream: bytes, sizes: list[int]) -> list[bytes]:
    """Drive the parser as asyncio's BufferedProtocol does: recv_into its buffer."""
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        room = parser.get_buffer(-1)
        assert len(room) > 0
        n = min(len(room), len(stream) - pos, sizes[i % len(sizes)] if sizes else len(stream))
        room[:n] = stream[pos:pos + n]
        parser.buffer_updated(n)
        pos, i = pos + n, i + 1
        got += [bytes(f) for f in drain(parser)]
    return got


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=400_000).map(lambda b: b[: len(b) % 300_000]), max_size=8),
    sizes=st.lists(st.integers(min_value=1, max_value=600_000), max_size=10),
)
def test_receiving_into_the_parser_buffer_reassembles_the_same_frames(payloads: list[bytes],
                                                                      sizes: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    parser = FrameParser(max_frame_bytes=300_000)
    assert receive(parser, stream, sizes) == payloads
    assert parser.buffered_bytes == 0


def test_room_for_a_large_pending_frame_is_offered_in_one_piece() -> None:
    payload = b"z" * 3_000_000
    parser = FrameParser(max_frame_bytes=len(payload))
    parser.feed(frame(payload)[:10])
    room = parser.get_buffer(-1)
    assert len(room) >= len(payload) - 6  # the rest of the frame fits: one recv can finish it
    room.release()
    with pytest.raises(ValueError):
        parser.buffer_updated(10**9)


def test_an_oversize_prefix_is_refused_before_room_is_offered_for_it() -> None:
    parser = FrameParser(max_frame_bytes=10)
    room = parser.get_buffer(-1)
    room[:4] = struct.pack(">i", 1 << 30)
    room.release()
    with pytest.raises(FrameError, match="frame exceeds limit"):
        parser.buffer_updated(4)
    with pytest.raises(FrameError):
        parser.get_buffer(-1)


def test_feed_accepts_bytearray_and_memoryview() -> None:
    parser = FrameParser(max_frame_bytes=16)
    parser.feed(bytearray(frame(b"ab")))
    parser.feed(memoryview(frame(b"cd")))
    assert drain(parser) == [b"ab", b"cd"]


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    parser = FrameParser(max_frame_bytes=10)
    parser.feed(frame(b"0123456789"))
    assert parser.next_frame() == b"0123456789"


def test_zero_limit_allows_only_empty_frames() -> None:
    parser = FrameParser(max_frame_bytes=0)
    parser.feed(frame(b"") * 2)
    assert drain(parser) == [b"", b""]
    with pytest.raises(FrameError):
        parser.feed(frame(b"x"))


@pytest.mark.parametrize("size", [11, 2**31 - 1])
def test_oversize_prefix_fails_on_its_fourth_byte(size: int) -> None:
    parser = FrameParser(max_frame_bytes=10)
    prefix = struct.pack(">i", size)
    for byte in prefix[:3]:
        parser.feed(bytes([byte]))
    # Rejected as soon as the prefix is complete: no payload byte is awaited.
    with pytest.raises(FrameError, match=f"frame exceeds limit size={size} max_frame_bytes=10"):
        parser.feed(prefix[3:])
    assert parser.buffered_bytes == 0


@pytest.mark.parametrize("size", [-1, -(2**31)])
def test_negative_prefix_is_rejected(size: int) -> None:
    parser = FrameParser(max_frame_bytes=10)
    with pytest.raises(FrameError, match=f"negative frame size size={size}"):
        parser.feed(struct.pack(">i", size) + b"junk")


def test_oversize_frame_after_good_ones_still_yields_the_good_ones_first() -> None:
    parser = FrameParser(max_frame_bytes=10)
    parser.feed(frame(b"ok") + frame(b"also ok") + struct.pack(">i", 1000) + b"x" * 20)
    assert parser.next_frame() == b"ok"
    assert parser.next_frame() == b"also ok"
    with pytest.raises(FrameError, match="size=1000"):
        parser.next_frame()


def test_parser_stays_failed_after_a_frame_error() -> None:
    parser = FrameParser(max_frame_bytes=10)
    with pytest.raises(FrameError) as first:
        parser.feed(struct.pack(">i", 99))
    with pytest.raises(FrameError) as again:
        parser.next_frame()
    assert again.value is first.value
    with pytest.raises(FrameError):
        parser.feed(frame(b"fine"))


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_limit_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        FrameParser(max_frame_bytes=bad)  # type: ignore[arg-type]
