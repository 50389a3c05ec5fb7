"""Avro segment objects: ingest segments (batch level) and tier segments (record level).

Both kinds are standard Avro object container files that a plain
``fastavro.reader`` (or any Avro library) reads.  Tidelog-specific facts live
in the container's header metadata under ``tidelog.*`` keys.

Ingest segments (``tidelog.format = "ingest-v1"``, codec ``null``)
    One object per broker flush.  One Avro record per Kafka batch, stored
    exactly as the producer sent it (base offset already patched).  Each
    partition's batches are contiguous in Avro blocks of their own, at most
    ~4 MiB each, so one ranged GET returns one partition.  The header's
    ``tidelog.summary`` JSON lists every partition with the ABSOLUTE byte
    range ``[position, position + length)`` of its blocks (sync markers
    included), its offsets, timestamps, CRC-32C of that range, and the
    producer state (one entry per idempotent batch) needed to rebuild
    deduplication after a crash.

    The metadata map is written as one Avro map block with a negative count
    followed by its byte size (allowed by the Avro spec), so after the first
    few bytes a reader knows the header's exact length: a prefix that is too
    short raises :class:`NeedMoreBytes` with ``needed`` set to it.  Absolute
    positions depend on the header length, which depends on the positions'
    digits; the encoder iterates to the (quickly reached) fixed point.

Tier segments (``tidelog.format = "tier-v1"``, codec ``zstandard`` by default)
    One partition per object, one Avro record per Kafka record, written with
    fastavro.  The header names the topic, partition and offset range.

Integrity.  Avro's ``null`` codec has no checksum and fastavro checks none
for the others, yet a flipped bit must never decode into a wrong answer.
All checksums are CRC-32C written as 8 lowercase hex digits (JSON numbers
in the summary):

* ``tidelog.header_crc32c`` covers every other metadata entry, each as an
  Avro string key plus bytes value in file order, then the sync marker;
* each ingest partition's ``crc32c`` covers its byte range;
* ``tidelog.data_crc32c`` (tier) covers everything after the header.

A ranged read given the partition's summary checks the range CRC; one given
only the bytes (a ``SegmentRef`` carries no CRC) checks each batch's own
CRC-32C and cross-checks the Avro fields against the batch header, which
leaves only the partition leader epoch (outside the Kafka CRC) unverified.

Every failure to decode raises :class:`~tidelog.storage.errors.CorruptData`,
except that header parsing on a prefix raises :class:`NeedMoreBytes`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import crc32c
import fastavro

from .errors import CorruptData, InvalidRequest, TidelogError
from .model import SegmentRef
from .records import (
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    LENGTH_FIELD_END,
    MAGIC,
    Record,
    last_sequence,
    parse_header,
)

FORMAT_INGEST: Final = "ingest-v1"
FORMAT_TIER: Final = "tier-v1"
NAMESPACE: Final = "io.tidelog"

#: A partition's batches are split into Avro blocks of about this size.
BLOCK_TARGET_BYTES: Final = 4 * 1024 * 1024
#: Uncompressed bytes per tier block; large blocks compress much better.
TIER_BLOCK_BYTES: Final = 1024 * 1024
TIER_CODECS: Final = ("zstandard", "snappy", "null")
#: Refuse headers larger than this instead of asking for ever more bytes.
MAX_HEADER_BYTES: Final = 16 * 1024 * 1024
#: Bytes enough to learn the exact header length of a tidelog object.
MAX_PREAMBLE_BYTES: Final = 4 + 10 + 10

AVRO_MAGIC: Final = b"Obj\x01"
SYNC_SIZE: Final = 16

_KEY_SCHEMA: Final = "avro.schema"
_KEY_CODEC: Final = "avro.codec"
_KEY_FORMAT: Final = "tidelog.format"
_KEY_HEADER_CRC: Final = "tidelog.header_crc32c"
_KEY_DATA_CRC: Final = "tidelog.data_crc32c"

_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1

INGEST_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "IngestBatch",
    "namespace": NAMESPACE,
    "doc": "One Kafka record batch (format v2) as its producer sent it, with the broker-assigned base offset.",
    "fields": [
        {"name": "topic", "type": "string", "doc": "Topic name."},
        {"name": "partition", "type": "int", "doc": "Partition number within the topic."},
        {"name": "base_offset", "type": "long", "doc": "Offset of the batch's first record."},
        {"name": "last_offset", "type": "long", "doc": "Offset of the batch's last record."},
        {"name": "max_timestamp", "type": "long", "doc": "Largest record timestamp in the batch (epoch ms)."},
        {"name": "record_count", "type": "int", "doc": "Number of records in the batch."},
        {"name": "batch", "type": "bytes", "doc": "The Kafka record batch v2 bytes, CRC-32C intact."},
    ],
}

TIER_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "TierRecord",
    "namespace": NAMESPACE,
    "doc": "One Kafka record of one partition, kept for long-term storage and analytics.",
    "fields": [
        {"name": "offset", "type": "long", "doc": "Absolute offset of the record in its partition."},
        {"name": "timestamp", "type": "long", "doc": "Record timestamp as consumers see it (epoch ms)."},
        {"name": "key", "type": ["null", "bytes"], "doc": "Record key, null when absent."},
        {"name": "value", "type": ["null", "bytes"], "doc": "Record value, null for a tombstone."},
        {
            "name": "headers",
            "doc": "Record headers in their original order.",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "TierHeader",
                    "doc": "One Kafka record header.",
                    "fields": [
                        {"name": "key", "type": "string", "doc": "Header name."},
                        {"name": "value", "type": ["null", "bytes"], "doc": "Header value, may be null."},
                    ],
                },
            },
        },
    ],
}

_INGEST_SCHEMA_JSON: Final = json.dumps(INGEST_SCHEMA, separators=(",", ":")).encode()
_INGEST_PARSED: Final = fastavro.parse_schema(INGEST_SCHEMA)
_TIER_PARSED: Final = fastavro.parse_schema(TIER_SCHEMA)


class NeedMoreBytes(TidelogError):
    """The header continues past the bytes given: fetch ``needed`` bytes from the start and retry.

    Not a corruption: it only means the prefix was short.  ``needed`` is the
    exact header length once the first :data:`MAX_PREAMBLE_BYTES` are known,
    a lower bound before that.
    """

    def __init__(self, needed: int, available: int) -> None:
        super().__init__("segment header needs more bytes", needed=needed, available=available)
        self.needed = needed


# --------------------------------------------------------------------------
# Domain types
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One Kafka batch in an ingest segment; the numbers mirror its (patched) header.

    The encoder rejects an entry whose numbers differ from its batch header,
    and the decoder checks them again, so the Avro fields can be trusted for
    indexing without re-reading the batch.
    """

    base_offset: int
    last_offset: int
    max_timestamp: int
    record_count: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    batch: bytes

    @classmethod
    def from_batch(cls, batch: bytes) -> BatchEntry:
        """Describe a complete, already patched batch from its own header."""
        h = parse_header(batch)
        if h.size != len(batch):
            raise CorruptData("record batch length does not match its buffer", size=h.size, available=len(batch))
        return cls(
            h.base_offset, h.last_offset, h.max_timestamp, h.record_count,
            h.producer_id, h.producer_epoch, h.base_sequence, batch,
        )


class ProducerBatch(NamedTuple):
    """Sequence range of one idempotent batch, as stored in the summary (a 6-element list)."""

    producer_id: int
    producer_epoch: int
    base_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class PartitionSummary:
    """Where one partition's blocks sit in an ingest object, and what they hold."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    max_timestamp: int
    record_count: int
    position: int
    length: int
    crc32c: int
    producers: tuple[ProducerBatch, ...] = ()

    @property
    def end(self) -> int:
        return self.position + self.length

    def ref(self, object_key: str) -> SegmentRef:
        return SegmentRef(
            object_key, self.position, self.length, self.first_offset, self.last_offset, self.max_timestamp, "ingest"
        )


@dataclass(frozen=True, slots=True)
class EncodedSegment:
    data: bytes
    partitions: list[PartitionSummary]


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """Everything the header of an ingest object says, positions absolute."""

    writer: str
    seq: int
    created_ms: int
    sync: bytes
    data_start: int
    partitions: tuple[PartitionSummary, ...]

    @property
    def end(self) -> int:
        """Length of the whole object."""
        return self.partitions[-1].end if self.partitions else self.data_start

    def find(self, topic: str, partition: int) -> PartitionSummary | None:
        for p in self.partitions:
            if p.topic == topic and p.partition == partition:
                return p
        return None


@dataclass(frozen=True, slots=True)
class TierHeader:
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    max_timestamp: int
    record_count: int
    codec: str


# --------------------------------------------------------------------------
# Avro binary primitives
# --------------------------------------------------------------------------

_SMALL_LONGS: Final = [bytes([((n << 1) ^ (n >> 63)) & 0xFF]) for n in range(0, 64)]


def _long(n: int) -> bytes:
    """Zigzag varint, the Avro encoding of ``int`` and ``long``."""
    if 0 <= n < 64:
        return _SMALL_LONGS[n]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _bytes(b: bytes) -> bytes:
    return _long(len(b)) + b


def _read_long(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a zigzag varint at ``pos``; truncation raises :class:`NeedMoreBytes`.

    A cut varint asks for its longest possible encoding (10 bytes): in a
    header a 16-byte sync marker always follows, so that never overshoots
    the object, and it lets a preamble parse finish in one refetch.
    """
    if pos >= end:
        raise NeedMoreBytes(pos + 10, end)
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    start = pos
    z = b & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise NeedMoreBytes(start + 10, end)
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise CorruptData("avro varint is longer than 10 bytes", pos=start)
    if z >> 64:
        raise CorruptData("avro varint overflows a long", pos=start)
    return (z >> 1) ^ -(z & 1), pos


def _read_int(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value, nxt = _read_long(buf, pos, end)
    if not _INT_MIN <= value <= _INT_MAX:
        raise CorruptData("avro int out of range", value=value, pos=pos)
    return value, nxt


def _read_sized(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix; return the (start, end) of the bytes it announces."""
    length, start = _read_long(buf, pos, end)
    if length < 0:
        raise CorruptData("negative avro length", length=length, pos=pos)
    stop = start + length
    if stop > end:
        raise NeedMoreBytes(stop, end)
    return start, stop


# --------------------------------------------------------------------------
# Object container header
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Container:
    metadata: dict[str, bytes]
    order: list[tuple[str, bytes]]
    sync: bytes
    data_start: int


def _entry_bytes(key: str, value: bytes) -> bytes:
    return _bytes(key.encode()) + _bytes(value)


def _header_crc(entries: Iterable[tuple[str, bytes]], sync: bytes) -> bytes:
    crc = 0
    for key, value in entries:
        if key != _KEY_HEADER_CRC:
            crc = crc32c.crc32c(_entry_bytes(key, value), crc)
    return b"%08x" % crc32c.crc32c(sync, crc)


def _encode_header(entries: list[tuple[str, bytes]], sync: bytes) -> bytes:
    """Magic, the metadata map as ONE sized block (negative count + byte size), sync."""
    entries = [*entries, (_KEY_HEADER_CRC, _header_crc(entries, sync))]
    body = b"".join(_entry_bytes(k, v) for k, v in entries)
    return b"".join((AVRO_MAGIC, _long(-len(entries)), _long(len(body)), body, b"\x00", sync))


def _parse_container(buf: bytes) -> _Container:
    """Parse a container header from a prefix of an object.

    Accepts any valid Avro metadata map encoding; with the one-sized-block
    form tidelog writes, the exact header length is known after the block
    size, so a short prefix gets an exact ``needed``.  Garbage that claims a
    header beyond :data:`MAX_HEADER_BYTES` is corrupt, not a reason to fetch.
    """
    try:
        return _parse_container_unbounded(buf)
    except NeedMoreBytes as exc:
        if exc.needed > MAX_HEADER_BYTES:
            raise CorruptData("avro header is too large", size=exc.needed) from exc
        raise


def _parse_container_unbounded(buf: bytes) -> _Container:
    end = len(buf)
    if end < len(AVRO_MAGIC):
        if AVRO_MAGIC.startswith(buf):
            raise NeedMoreBytes(MAX_PREAMBLE_BYTES, end)
        raise CorruptData("not an avro object container: bad magic")
    if buf[:4] != AVRO_MAGIC:
        raise CorruptData("not an avro object container: bad magic")
    pos = 4
    order: list[tuple[str, bytes]] = []
    while True:
        count, pos = _read_long(buf, pos, end)
        if count == 0:
            break
        block_end = None
        if count < 0:
            count = -count
            size, pos = _read_long(buf, pos, end)
            if size < 0:
                raise CorruptData("negative avro map block size", size=size)
            block_end = pos + size
            # The terminating zero count and the sync marker follow at least.
            if block_end + 1 + SYNC_SIZE > end:
                raise NeedMoreBytes(block_end + 1 + SYNC_SIZE, end)
        for _ in range(count):
            k0, k1 = _read_sized(buf, pos, end)
            v0, v1 = _read_sized(buf, k1, end)
            try:
                key = buf[k0:k1].decode()
            except UnicodeDecodeError as exc:
                raise CorruptData("avro metadata key is not utf-8", pos=k0) from exc
            order.append((key, buf[v0:v1]))
            pos = v1
        if block_end is not None and pos != block_end:
            raise CorruptData("avro metadata block size does not match its entries", size=block_end, actual=pos)
        if pos > MAX_HEADER_BYTES:
            raise CorruptData("avro header is too large", size=pos)
    if pos + SYNC_SIZE > end:
        raise NeedMoreBytes(pos + SYNC_SIZE, end)
    metadata = dict(order)
    if len(metadata) != len(order):
        raise CorruptData("avro metadata has duplicate keys")
    return _Container(metadata, order, buf[pos : pos + SYNC_SIZE], pos + SYNC_SIZE)


def _check_container(c: _Container, fmt: str, parsed_schema: dict[str, Any], codecs: Sequence[str]) -> str:
    """Check the CRC, format, codec and schema of a tidelog header; return the codec."""
    found = c.metadata.get(_KEY_FORMAT)
    if found != fmt.encode():
        raise CorruptData("unexpected segment format", expected=fmt, found=repr(found)[:40])
    stored = c.metadata.get(_KEY_HEADER_CRC)
    if stored is None or stored != _header_crc(c.order, c.sync):
        raise CorruptData("segment header crc mismatch")
    codec = c.metadata.get(_KEY_CODEC, b"null").decode("ascii", "replace")
    if codec not in codecs:
        raise CorruptData("unexpected avro codec", codec=codec[:20])
    try:
        schema = fastavro.parse_schema(json.loads(c.metadata[_KEY_SCHEMA]))
    except Exception as exc:  # fastavro raises several types for a bad schema; all mean the same here
        raise CorruptData("segment schema does not parse", error=repr(exc)) from exc
    if schema != parsed_schema:
        raise CorruptData("segment schema is not the expected one", format=fmt)
    return codec


def _meta_text(c: _Container, key: str) -> str:
    try:
        return c.metadata[key].decode()
    except (KeyError, UnicodeDecodeError) as exc:
        raise CorruptData("segment header entry missing or not text", key=key) from exc


def _meta_int(c: _Container, key: str) -> int:
    text = _meta_text(c, key)
    try:
        if not text.isascii():
            raise ValueError(text)
        return int(text)
    except ValueError as exc:
        raise CorruptData("segment header entry is not an integer", key=key) from exc


def _sync_marker(*parts: object) -> bytes:
    """A deterministic sync marker: same input, same bytes (idempotent retries, stable tests)."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=SYNC_SIZE).digest()


# --------------------------------------------------------------------------
# Ingest segments: encode
# --------------------------------------------------------------------------


def encode_ingest_segment(
    groups: Iterable[tuple[str, int, Sequence[BatchEntry]]],
    *,
    writer: str,
    seq: int,
    created_ms: int,
) -> EncodedSegment:
    """Encode one flush: each group is (topic, partition, its batches in offset order)."""
    sync = _sync_marker("ingest", writer, seq, created_ms)
    parts: list[bytes] = []
    drafts: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    rel = 0
    for topic, partition, entries in groups:
        if (topic, partition) in seen:
            raise InvalidRequest("partition appears twice in one segment", topic=topic, partition=partition)
        seen.add((topic, partition))
        if not entries:
            raise InvalidRequest("partition group has no batches", topic=topic, partition=partition)
        first = len(parts)
        draft = _encode_partition(topic, partition, entries, sync, parts)
        crc = 0
        for part in parts[first:]:
            crc = crc32c.crc32c(part, crc)
        length = sum(map(len, parts[first:]))
        draft.update(position=rel, length=length, crc32c=crc)
        drafts.append(draft)
        rel += length

    data_start = 0
    while True:
        summary = [{**d, "position": d["position"] + data_start} for d in drafts]
        entries_meta = [
            (_KEY_SCHEMA, _INGEST_SCHEMA_JSON),
            (_KEY_CODEC, b"null"),
            (_KEY_FORMAT, FORMAT_INGEST.encode()),
            ("tidelog.writer", writer.encode()),
            ("tidelog.seq", str(seq).encode()),
            ("tidelog.created_ms", str(created_ms).encode()),
            ("tidelog.summary", json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode()),
        ]
        header = _encode_header(entries_meta, sync)
        if len(header) == data_start:
            break
        data_start = len(header)
    return EncodedSegment(b"".join([header, *parts]), [_summary_from_json(d) for d in summary])


def _encode_partition(
    topic: str, partition: int, entries: Sequence[BatchEntry], sync: bytes, parts: list[bytes]
) -> dict[str, Any]:
    """Append the partition's blocks to ``parts``; return its summary without positions."""
    if not isinstance(topic, str) or not topic:
        raise InvalidRequest("topic must be a non-empty string", topic=topic)
    if not 0 <= partition <= _INT_MAX:
        raise InvalidRequest("partition out of range", partition=partition)
    try:
        prefix = _bytes(topic.encode()) + _long(partition)
    except UnicodeEncodeError as exc:
        raise InvalidRequest("topic is not encodable as utf-8", topic=repr(topic)) from exc
    producers: list[list[int]] = []
    block: list[bytes] = []
    block_bytes = 0
    previous_last = -1
    max_ts = -1
    count = 0
    for e in entries:
        _check_entry(e, previous_last, topic, partition)
        previous_last = e.last_offset
        max_ts = max(max_ts, e.max_timestamp)
        count += e.record_count
        if e.producer_id >= 0:
            producers.append([
                e.producer_id, e.producer_epoch, e.base_sequence,
                last_sequence(e.base_sequence, e.last_offset - e.base_offset), e.base_offset, e.last_offset,
            ])
        head = b"".join((
            prefix, _long(e.base_offset), _long(e.last_offset), _long(e.max_timestamp),
            _long(e.record_count), _long(len(e.batch)),
        ))
        size = len(head) + len(e.batch)
        if block and block_bytes + size > BLOCK_TARGET_BYTES:
            _close_block(block, block_bytes, sync, parts)
            block, block_bytes = [], 0
        block.append(head)
        block.append(e.batch)
        block_bytes += size
    _close_block(block, block_bytes, sync, parts)
    return {
        "topic": topic,
        "partition": partition,
        "first_offset": entries[0].base_offset,
        "last_offset": previous_last,
        "max_timestamp": max_ts,
        "record_count": count,
        "position": 0,
        "length": 0,
        "crc32c": 0,
        "producers": producers,
    }


def _close_block(block: list[bytes], block_bytes: int, sync: bytes, parts: list[bytes]) -> None:
    parts.append(_long(len(block) // 2) + _long(block_bytes))
    parts.extend(block)
    parts.append(sync)


def _check_entry(e: BatchEntry, previous_last: int, topic: str, partition: int) -> None:
    """Cheap consistency checks so that what we write is what the decoder will accept."""
    batch = e.batch
    if not isinstance(batch, bytes) or len(batch) < HEADER_SIZE:
        raise InvalidRequest("batch entry holds no complete batch", topic=topic, partition=partition)
    (base, length, _epoch, magic, _crc, _attrs, delta, _ts, max_ts, pid, epoch, seq, count) = (
        HEADER_STRUCT.unpack_from(batch)
    )
    if (
        magic != MAGIC
        or length + LENGTH_FIELD_END != len(batch)
        or base != e.base_offset
        or base + delta != e.last_offset
        or max_ts != e.max_timestamp
        or count != e.record_count
        or pid != e.producer_id
        or epoch != e.producer_epoch
        or seq != e.base_sequence
    ):
        raise InvalidRequest(
            "batch entry does not match its batch header", topic=topic, partition=partition, base_offset=e.base_offset
        )
    if e.base_offset <= previous_last or e.record_count < 1 or not 0 <= e.base_offset <= e.last_offset <= _LONG_MAX:
        raise InvalidRequest(
            "batch offsets must be increasing", topic=topic, partition=partition, base_offset=e.base_offset
        )
    if not _LONG_MIN <= e.max_timestamp <= _LONG_MAX:
        raise InvalidRequest("batch max timestamp out of range", max_timestamp=e.max_timestamp)


# --------------------------------------------------------------------------
# Ingest segments: decode
# --------------------------------------------------------------------------


def decode_segment_header(prefix: bytes | bytearray | memoryview) -> SegmentHeader:
    """Parse an ingest object's header from a prefix of it (e.g. a ranged GET of 64 KiB)."""
    buf = bytes(prefix)
    c = _parse_container(buf)
    _check_container(c, FORMAT_INGEST, _INGEST_PARSED, ("null",))
    try:
        raw = json.loads(c.metadata["tidelog.summary"])
    except (KeyError, ValueError, RecursionError) as exc:
        raise CorruptData("segment summary missing or not json") from exc
    if not isinstance(raw, list):
        raise CorruptData("segment summary is not a list")
    partitions = tuple(_summary_from_json(p) for p in raw)
    expected = c.data_start
    seen: set[tuple[str, int]] = set()
    for p in partitions:
        if p.position != expected:
            raise CorruptData("segment summary ranges are not contiguous", position=p.position, expected=expected)
        if (p.topic, p.partition) in seen:
            raise CorruptData("segment summary lists a partition twice", topic=p.topic, partition=p.partition)
        seen.add((p.topic, p.partition))
        expected = p.end
    return SegmentHeader(
        writer=_meta_text(c, "tidelog.writer"),
        seq=_meta_int(c, "tidelog.seq"),
        created_ms=_meta_int(c, "tidelog.created_ms"),
        sync=c.sync,
        data_start=c.data_start,
        partitions=partitions,
    )


_SUMMARY_INTS: Final = (
    "partition", "first_offset", "last_offset", "max_timestamp", "record_count", "position", "length", "crc32c",
)


def _summary_from_json(raw: Any) -> PartitionSummary:
    if not isinstance(raw, dict):
        raise CorruptData("segment summary entry is not an object")
    topic = raw.get("topic")
    if not isinstance(topic, str) or not topic:
        raise CorruptData("segment summary entry has no topic")
    producers_raw = raw.get("producers")
    if not isinstance(producers_raw, list):
        raise CorruptData("segment summary producers is not a list", topic=topic)
    producers = []
    for item in producers_raw:
        if not isinstance(item, list) or len(item) != 6 or not all(_is_long(v) for v in item):
            raise CorruptData("segment summary producer entry is malformed", topic=topic)
        producers.append(ProducerBatch(*item))
    values = [raw.get(name) for name in _SUMMARY_INTS]
    if not all(_is_long(v) for v in values):
        raise CorruptData("segment summary entry has a non-integer field", topic=topic)
    s = PartitionSummary(topic, *values, producers=tuple(producers))
    if (
        not 0 <= s.partition <= _INT_MAX
        or not 0 <= s.first_offset <= s.last_offset
        or s.record_count < 1
        or s.length <= 0
        or s.position < 0
        or not 0 <= s.crc32c <= 0xFFFFFFFF
    ):
        raise CorruptData("segment summary entry is out of range", topic=topic, partition=s.partition)
    return s


def _is_long(v: Any) -> bool:
    return type(v) is int and _LONG_MIN <= v <= _LONG_MAX


def decode_partition_blocks(
    data: bytes | bytearray | memoryview,
    *,
    expect: PartitionSummary | None = None,
    sync: bytes | None = None,
) -> list[BatchEntry]:
    """Decode one partition's byte range ``[position, position + length)`` of an ingest object.

    With ``expect`` (the partition's summary) the range's CRC-32C is checked
    and the decoded batches must agree with it.  Without it, each batch's own
    CRC-32C is checked instead.  ``sync``, when given, is the object's sync
    marker; otherwise all blocks of the range must share one.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    if expect is not None:
        if len(buf) != expect.length or crc32c.crc32c(buf) != expect.crc32c:
            raise CorruptData(
                "partition range crc mismatch", topic=expect.topic, partition=expect.partition, length=len(buf)
            )
    entries, ident = _decode_blocks(buf, 0, len(buf), sync, verify_batches=expect is None)
    if expect is not None:
        _check_against_summary(entries, ident, expect)
    return entries


def _decode_blocks(
    buf: bytes, pos: int, end: int, sync: bytes | None, *, verify_batches: bool
) -> tuple[list[BatchEntry], tuple[str, int]]:
    """Decode whole Avro blocks of one partition in ``buf[pos:end]``."""
    if pos >= end:
        raise CorruptData("partition range is empty")
    try:
        return _decode_blocks_unchecked(buf, pos, end, sync, verify_batches)
    except NeedMoreBytes as exc:
        raise CorruptData("partition range is truncated", needed=exc.needed, end=end) from exc


def _decode_blocks_unchecked(
    buf: bytes, pos: int, end: int, sync: bytes | None, verify_batches: bool
) -> tuple[list[BatchEntry], tuple[str, int]]:
    read_long = _read_long
    entries: list[BatchEntry] = []
    prefix = b""
    ident: tuple[str, int] = ("", -1)
    while pos < end:
        count, pos = read_long(buf, pos, end)
        size, pos = read_long(buf, pos, end)
        block_end = pos + size
        if count <= 0 or size <= 0 or block_end + SYNC_SIZE > end:
            raise CorruptData("bad avro block framing", count=count, size=size, pos=pos)
        for _ in range(count):
            if prefix and buf.startswith(prefix, pos):
                pos += len(prefix)
            elif prefix:
                raise CorruptData("partition range mixes partitions", pos=pos)
            else:
                start = pos
                t0, t1 = _read_sized(buf, pos, block_end)
                try:
                    topic = buf[t0:t1].decode()
                except UnicodeDecodeError as exc:
                    raise CorruptData("topic is not utf-8", pos=t0) from exc
                partition, pos = _read_int(buf, t1, block_end)
                prefix = buf[start:pos]
                ident = (topic, partition)
            base_offset, pos = read_long(buf, pos, block_end)
            last_offset, pos = read_long(buf, pos, block_end)
            max_timestamp, pos = read_long(buf, pos, block_end)
            record_count, pos = _read_int(buf, pos, block_end)
            b0, pos = _read_sized(buf, pos, block_end)
            batch = buf[b0:pos]
            entries.append(_entry(batch, base_offset, last_offset, max_timestamp, record_count, verify_batches))
        if pos != block_end:
            raise CorruptData("avro block size does not match its records", size=size, pos=pos)
        marker = buf[pos : pos + SYNC_SIZE]
        if sync is None:
            sync = marker
        elif marker != sync:
            raise CorruptData("avro sync marker mismatch", pos=pos)
        pos += SYNC_SIZE
    for previous, current in zip(entries, entries[1:]):
        if current.base_offset <= previous.last_offset:
            raise CorruptData("batch offsets are not increasing", base_offset=current.base_offset)
    return entries, ident


def _entry(
    batch: bytes, base_offset: int, last_offset: int, max_timestamp: int, record_count: int, verify: bool
) -> BatchEntry:
    """Cross-check the Avro fields against the Kafka header they describe (hot: no BatchHeader)."""
    if len(batch) < HEADER_SIZE:
        raise CorruptData("stored batch is shorter than a batch header", base_offset=base_offset)
    (base, length, _epoch, magic, crc, _attrs, delta, _ts, max_ts, pid, epoch, seq, count) = (
        HEADER_STRUCT.unpack_from(batch)
    )
    if (
        magic != MAGIC
        or length + LENGTH_FIELD_END != len(batch)
        or base != base_offset
        or base + delta != last_offset
        or max_ts != max_timestamp
        or count != record_count
    ):
        raise CorruptData("avro batch fields do not match the batch header", base_offset=base_offset)
    if verify:
        with memoryview(batch) as view:
            if crc32c.crc32c(view[CRC_START:]) != crc:
                raise CorruptData("record batch crc mismatch", base_offset=base_offset)
    return BatchEntry(base_offset, last_offset, max_timestamp, record_count, pid, epoch, seq, batch)


def _check_against_summary(entries: list[BatchEntry], ident: tuple[str, int], s: PartitionSummary) -> None:
    producers = tuple(
        ProducerBatch(
            e.producer_id, e.producer_epoch, e.base_sequence,
            last_sequence(e.base_sequence, e.last_offset - e.base_offset), e.base_offset, e.last_offset,
        )
        for e in entries
        if e.producer_id >= 0
    )
    if (
        ident != (s.topic, s.partition)
        or entries[0].base_offset != s.first_offset
        or entries[-1].last_offset != s.last_offset
        or max(e.max_timestamp for e in entries) != s.max_timestamp
        or sum(e.record_count for e in entries) != s.record_count
        or producers != s.producers
    ):
        raise CorruptData("partition blocks do not match the segment summary", topic=s.topic, partition=s.partition)


def decode_ingest_segment(
    data: bytes | bytearray | memoryview,
) -> tuple[SegmentHeader, list[tuple[str, int, BatchEntry]]]:
    """Decode a whole ingest object, checking every range against the header."""
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        header = decode_segment_header(buf)
    except NeedMoreBytes as exc:
        raise CorruptData("segment is truncated inside its header", needed=exc.needed, size=len(buf)) from exc
    if header.end != len(buf):
        raise CorruptData("segment length does not match its summary", expected=header.end, size=len(buf))
    out: list[tuple[str, int, BatchEntry]] = []
    with memoryview(buf) as view:
        for s in header.partitions:
            if crc32c.crc32c(view[s.position : s.end]) != s.crc32c:
                raise CorruptData("partition range crc mismatch", topic=s.topic, partition=s.partition)
            entries, ident = _decode_blocks(buf, s.position, s.end, header.sync, verify_batches=False)
            _check_against_summary(entries, ident, s)
            out.extend((s.topic, s.partition, e) for e in entries)
    return header, out


# --------------------------------------------------------------------------
# Tier segments
# --------------------------------------------------------------------------


def encode_tier_segment(
    topic: str, partition: int, records: Iterable[Record], *, codec: str = "zstandard"
) -> bytes:
    """Write one partition's records, one Avro record each, offsets strictly increasing."""
    if codec not in TIER_CODECS:
        raise InvalidRequest("unsupported tier codec", codec=codec)
    if not isinstance(topic, str) or not topic or not 0 <= partition <= _INT_MAX:
        raise InvalidRequest("bad tier segment partition", topic=topic, partition=partition)
    sync = _sync_marker("tier", topic, partition)
    stats = _TierStats()
    body = io.BytesIO()
    try:
        fastavro.writer(
            body, _TIER_PARSED, stats.track(records), codec=codec, sync_interval=TIER_BLOCK_BYTES, sync_marker=sync
        )
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise InvalidRequest("record cannot be encoded for tiering", topic=topic, error=repr(exc)) from exc
    if stats.count == 0:
        raise InvalidRequest("tier segment needs at least one record", topic=topic, partition=partition)
    raw = body.getbuffer()
    written = _parse_prefix_of(raw)
    payload = raw[written.data_start :]
    entries = [
        (_KEY_SCHEMA, written.metadata[_KEY_SCHEMA]),
        (_KEY_CODEC, codec.encode()),
        (_KEY_FORMAT, FORMAT_TIER.encode()),
        ("tidelog.topic", topic.encode()),
        ("tidelog.partition", str(partition).encode()),
        ("tidelog.first_offset", str(stats.first).encode()),
        ("tidelog.last_offset", str(stats.last).encode()),
        ("tidelog.max_timestamp", str(stats.max_timestamp).encode()),
        ("tidelog.record_count", str(stats.count).encode()),
        (_KEY_DATA_CRC, b"%08x" % crc32c.crc32c(payload)),
    ]
    try:
        return b"".join((_encode_header(entries, sync), payload))
    finally:
        payload.release()
        raw.release()


def _parse_prefix_of(view: memoryview) -> _Container:
    """Parse the header at the start of a large buffer without copying all of it."""
    probe = 64 * 1024
    while True:
        try:
            return _parse_container(bytes(view[:probe]))
        except NeedMoreBytes as exc:
            if probe >= len(view):
                raise CorruptData("avro container is truncated inside its header") from exc
            probe = exc.needed


class _TierStats:
    """Collects the header facts while fastavro streams the records."""

    def __init__(self) -> None:
        self.first = self.last = -1
        self.max_timestamp = 0
        self.count = 0

    def track(self, records: Iterable[Record]) -> Iterator[dict[str, Any]]:
        for r in records:
            if r.offset < 0 or r.offset <= self.last:
                raise InvalidRequest("tier records must have increasing offsets", offset=r.offset, previous=self.last)
            if self.count == 0:
                self.first = r.offset
                self.max_timestamp = r.timestamp
            self.last = r.offset
            self.count += 1
            self.max_timestamp = max(self.max_timestamp, r.timestamp)
            yield {
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": r.key,
                "value": r.value,
                "headers": [{"key": k, "value": v} for k, v in r.headers],
            }


def decode_tier_header(data: bytes | bytearray | memoryview) -> TierHeader:
    """Parse a tier object's header (a prefix is enough; see :class:`NeedMoreBytes`)."""
    return _decode_tier_header(bytes(data))[0]


def _decode_tier_header(buf: bytes) -> tuple[TierHeader, _Container]:
    c = _parse_container(buf)
    codec = _check_container(c, FORMAT_TIER, _TIER_PARSED, TIER_CODECS)
    header = TierHeader(
        topic=_meta_text(c, "tidelog.topic"),
        partition=_meta_int(c, "tidelog.partition"),
        first_offset=_meta_int(c, "tidelog.first_offset"),
        last_offset=_meta_int(c, "tidelog.last_offset"),
        max_timestamp=_meta_int(c, "tidelog.max_timestamp"),
        record_count=_meta_int(c, "tidelog.record_count"),
        codec=codec,
    )
    if not header.topic or header.record_count < 1 or not 0 <= header.first_offset <= header.last_offset:
        raise CorruptData("tier header is out of range", topic=header.topic)
    return header, c


def decode_tier_segment(data: bytes | bytearray | memoryview) -> tuple[TierHeader, list[Record]]:
    """Decode a whole tier object; the payload CRC is checked before fastavro sees it."""
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        header, c = _decode_tier_header(buf)
    except NeedMoreBytes as exc:
        raise CorruptData("tier segment is truncated inside its header", needed=exc.needed, size=len(buf)) from exc
    with memoryview(buf) as view:
        crc = b"%08x" % crc32c.crc32c(view[c.data_start :])
    if crc != c.metadata.get(_KEY_DATA_CRC):
        raise CorruptData("tier segment data crc mismatch", topic=header.topic, partition=header.partition)
    try:
        records = [
            Record(
                r["offset"], r["timestamp"], r["key"], r["value"],
                tuple((h["key"], h["value"]) for h in r["headers"]),
            )
            for r in fastavro.reader(io.BytesIO(buf))
        ]
    # Only reachable for bytes whose CRC matched, i.e. a writer bug; fastavro
    # and the codecs raise many exception types, all meaning "does not decode".
    except Exception as exc:
        raise CorruptData("tier segment does not decode", topic=header.topic, error=repr(exc)) from exc
    _check_tier_records(header, records)
    return header, records


def _check_tier_records(h: TierHeader, records: list[Record]) -> None:
    if (
        len(records) != h.record_count
        or records[0].offset != h.first_offset
        or records[-1].offset != h.last_offset
        or max(r.timestamp for r in records) != h.max_timestamp
        or any(b.offset <= a.offset for a, b in zip(records, records[1:]))
    ):
        raise CorruptData("tier records do not match the header", topic=h.topic, partition=h.partition)
