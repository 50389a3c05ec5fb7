"""Tier segments as independently readable *chunks* (pure: no I/O).

A tier object is one standard Avro container written by
`segments.encode_tier_segment`: one Avro record per Kafka record, in blocks
of about `segments.TIER_BLOCK_BYTES` of uncompressed records.  Fetching a
whole 64 MiB object to serve one consumer fetch would either blow the read
cache or re-fetch the object for every request, so the tier item lists
**chunks**: runs of consecutive whole blocks, each ending with the file's
sync marker, with the first record offset, byte range, CRC-32C and largest
timestamp of each.  A reader GETs one chunk (a few MiB) with a ranged GET.

A chunk decodes on its own: Avro blocks need only the writer schema (fixed,
`segments.TIER_SCHEMA`), the codec (kept in the tier item) and the sync
marker (the chunk's last 16 bytes).  We prepend a synthetic container header
with exactly those and hand the bytes to fastavro.

Integrity: Avro codecs carry no checksum we can rely on (``null`` has none
at all), so every chunk is checked
against the CRC-32C recorded in the tier item before it is decoded; the
whole object also carries ``tidelog.data_crc32c`` for readers of entire files.

Object keys are content-addressed (see `keys.tier_object_key`): ``digest``
is a hash of the encoded bytes, and encoding is deterministic for equal
records and codec, so two tierers racing over one range write equal keys
with equal bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import crc32c
import fastavro

from .errors import CorruptData, Internal
from .records import COMPRESSION_NONE, Record, build_batches
from .segments import AVRO_MAGIC, SYNC_SIZE, TIER_SCHEMA, BatchEntry, encode_tier_segment

#: Uncompressed record bytes per chunk: big enough that one ranged GET serves
#: several consumer fetches, small enough to cache many and decode quickly.
DEFAULT_CHUNK_BYTES: Final = 4 * 1024 * 1024
#: Rebuilt batches are at most this large (uncompressed), so a consumer's
#: partial fetch never has to take a whole chunk at once.
SERVED_BATCH_BYTES: Final = 512 * 1024
DIGEST_BYTES: Final = 8

_TIER_PARSED: Final = fastavro.parse_schema(TIER_SCHEMA)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole Avro blocks ``[position, position + length)`` of a tier object."""

    first_offset: int
    position: int
    length: int
    crc32c: int
    max_timestamp: int

    def to_json(self) -> list[int]:
        return [self.first_offset, self.position, self.length, self.crc32c, self.max_timestamp]

    @classmethod
    def from_json(cls, raw: Any) -> "Chunk":
        if not isinstance(raw, list) or len(raw) != 5 or not all(type(v) is int for v in raw):
            raise CorruptData("tier chunk entry is malformed", entry=repr(raw)[:80])
        return cls(*raw)


@dataclass(frozen=True, slots=True)
class EncodedTier:
    data: bytes
    digest: str
    chunks: tuple[Chunk, ...]
    first_offset: int
    last_offset: int
    max_timestamp: int
    record_count: int
    tombstones: int
    raw_bytes: int


def record_size(record: Record) -> int:
    """Payload bytes of a record (key, value, headers): the unit segment and chunk sizes are counted in."""
    size = len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers:
        size += len(name) + len(value or b"")
    return size


class _Tracker:
    """Notes what the chunk table needs while fastavro streams the records."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        self.timestamps: list[int] = []
        self.tombstones = 0

    def track(self, records: Iterable[Record]) -> Iterator[Record]:
        offsets, sizes, timestamps = self.offsets.append, self.sizes.append, self.timestamps.append
        for r in records:  # hot: one pass per tiered record
            offsets(r.offset)
            timestamps(r.timestamp)
            value = r.value
            size = len(r.key or b"") + (len(value) if value is not None else 0)
            if value is None:
                self.tombstones += 1
            if r.headers:
                size += sum(len(k) + len(v or b"") for k, v in r.headers)
            sizes(size)
            yield r


def encode_tier(topic: str, partition: int, records: Iterable[Record], *, codec: str = "zstandard",
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> EncodedTier:
    """Encode one tier segment and its chunk table; ``records`` must be non-empty with increasing offsets."""
    tracker = _Tracker()
    data = encode_tier_segment(topic, partition, tracker.track(records), codec=codec)
    _, blocks = scan_blocks(data)
    if sum(count for _, _, count in blocks) != len(tracker.offsets):
        raise Internal("tier blocks do not hold every record", records=len(tracker.offsets))
    chunks: list[Chunk] = []
    index = 0
    run_start = run_end = -1
    run_first = run_index = run_raw = 0
    for position, length, count in blocks:
        if run_start < 0:
            run_start, run_first, run_index, run_raw = position, tracker.offsets[index], index, 0
        run_end = position + length
        run_raw += sum(tracker.sizes[index:index + count])
        index += count
        if run_raw >= chunk_bytes:
            chunks.append(_chunk(data, run_first, run_start, run_end, tracker.timestamps[run_index:index]))
            run_start = -1
    if run_start >= 0:
        chunks.append(_chunk(data, run_first, run_start, run_end, tracker.timestamps[run_index:index]))
    return EncodedTier(
        data=data,
        digest=hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest(),
        chunks=tuple(chunks),
        first_offset=tracker.offsets[0],
        last_offset=tracker.offsets[-1],
        max_timestamp=max(tracker.timestamps),
        record_count=len(tracker.offsets),
        tombstones=tracker.tombstones,
        raw_bytes=sum(tracker.sizes),
    )


def _chunk(data: bytes, first_offset: int, start: int, end: int, timestamps: list[int]) -> Chunk:
    with memoryview(data) as view:
        crc = crc32c.crc32c(view[start:end])
    return Chunk(first_offset, start, end - start, crc, max(timestamps))


# --------------------------------------------------------------------------
# Avro container framing
# --------------------------------------------------------------------------


def _read_long(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    shift = z = 0
    while True:
        if pos >= len(buf):
            raise CorruptData("avro varint runs past the end", pos=pos)
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptData("avro varint is too long", pos=pos)


def scan_blocks(data: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """The header length and each block's ``(position, length, record count)``.

    A block's range runs from its record count to the end of its sync
    marker, so consecutive blocks are contiguous and any run of them is a
    valid Avro block sequence.
    """
    if data[:4] != AVRO_MAGIC:
        raise CorruptData("not an avro object container: bad magic")
    pos = 4
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            break
        if count < 0:
            size, pos = _read_long(data, pos)
            pos += size
            continue
        for _ in range(count * 2):  # key then value, each a length-prefixed byte string
            length, pos = _read_long(data, pos)
            pos += length
    sync = data[pos:pos + SYNC_SIZE]
    pos += SYNC_SIZE
    data_start = pos
    if len(sync) != SYNC_SIZE or pos > len(data):
        raise CorruptData("avro container header is truncated")
    blocks = []
    while pos < len(data):
        start = pos
        count, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        if count <= 0 or size < 0:
            raise CorruptData("bad avro block framing", pos=start, count=count, size=size)
        pos += size
        if data[pos:pos + SYNC_SIZE] != sync:
            raise CorruptData("avro sync marker mismatch", pos=pos)
        pos += SYNC_SIZE
        blocks.append((start, pos - start, count))
    return data_start, blocks


@functools.lru_cache(maxsize=64)
def _synthetic_header(codec: str, sync: bytes) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, _TIER_PARSED, [], codec=codec, sync_marker=sync)
    return out.getvalue()


def decode_chunk(data: bytes, *, codec: str, crc: int) -> list[Record]:
    """Records of one chunk, after checking its CRC-32C."""
    if len(data) <= SYNC_SIZE or crc32c.crc32c(data) != crc:
        raise CorruptData("tier chunk crc mismatch", length=len(data))
    try:
        header = _synthetic_header(codec, bytes(data[-SYNC_SIZE:]))
        records = [
            Record(r["offset"], r["timestamp"], r["key"], r["value"],
                   tuple((h["key"], h["value"]) for h in r["headers"]))
            for r in fastavro.reader(io.BytesIO(header + data))
        ]
    # Reachable only for bytes whose CRC matched what we wrote, i.e. a bug;
    # fastavro and the codecs raise many types, all meaning "does not decode".
    except Exception as exc:
        raise CorruptData("tier chunk does not decode", codec=codec, error=repr(exc)) from exc
    if not records or any(b.offset <= a.offset for a, b in zip(records, records[1:])):
        raise CorruptData("tier chunk records are empty or out of order")
    return records


def entries_of(records: Sequence[Record], *, compression: int = COMPRESSION_NONE,
               max_batch_bytes: int = SERVED_BATCH_BYTES) -> list[BatchEntry]:
    """Rebuild Kafka v2 batches that keep every record's offset, timestamp and headers."""
    return [BatchEntry.from_batch(b) for b in build_batches(records, compression=compression,
                                                             max_batch_bytes=max_batch_bytes)]
