"""Kafka record batch v2 (magic 2): header parsing, produce validation, offset patching.

Two speeds live here on purpose:

* The produce path is **batch level**: it reads the fixed 61-byte header and
  checks the CRC-32C, and nothing else.  No record is decoded, no payload is
  decompressed.  The broker then assigns offsets with :func:`patched_batch`,
  which rewrites ``baseOffset`` and ``partitionLeaderEpoch`` in place; both
  sit before the CRC-covered range, so the CRC stays valid and the
  producer's compressed bytes are stored untouched.
* Tiering and compaction are **record level**: :func:`decode_records` and
  :func:`build_batches` go through aiokafka's compiled record extension,
  which is several times faster than a Python loop over varints.

Invariants:

* every batch handed to the C reader has first been checked for length,
  magic and CRC here, because the extension trusts its input length;
* :func:`build_batches` keeps each record's absolute offset and timestamp,
  so compacted batches may have offset gaps but never renumber records;
* every failure is a :class:`~tidelog.storage.errors.TidelogError` whose
  ``kafka_code`` is what a Kafka broker would answer for the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import crc32c
from aiokafka.record.default_records import DefaultRecordBatch as _CBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as _CBuilder

from .errors import CorruptData, InvalidRequest

# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------

#: baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes,
#: lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch,
#: baseSequence, recordCount.  Public for hot loops that cannot afford a
#: :class:`BatchHeader` per batch; everything else uses :func:`parse_header`.
HEADER_STRUCT: Final = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE: Final = HEADER_STRUCT.size  # 61

#: Bytes counted by the batch itself in ``batchLength`` start here.
LENGTH_FIELD_END: Final = 12
#: The CRC covers ``[CRC_START, end)``: everything from ``attributes`` on.
CRC_START: Final = 21
_CRC_OFFSET: Final = 17
_MAGIC_OFFSET: Final = 16
_EPOCH_OFFSET: Final = 12
MAGIC: Final = 2
#: Smallest legal ``batchLength``: a header with no record bytes.
MIN_BATCH_LENGTH: Final = HEADER_SIZE - LENGTH_FIELD_END

_OFFSET: Final = struct.Struct(">q")
_INT32: Final = struct.Struct(">i")

COMPRESSION_NONE: Final = 0
COMPRESSION_GZIP: Final = 1
COMPRESSION_SNAPPY: Final = 2
COMPRESSION_LZ4: Final = 3
COMPRESSION_ZSTD: Final = 4
COMPRESSION_NAMES: Final = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

_COMPRESSION_MASK: Final = 0x07
_TIMESTAMP_TYPE_MASK: Final = 0x08
_TRANSACTIONAL_MASK: Final = 0x10
_CONTROL_MASK: Final = 0x20

TIMESTAMP_CREATE_TIME: Final = 0
TIMESTAMP_LOG_APPEND_TIME: Final = 1
#: Timestamp value meaning "none given"; Kafka skips skew checks for it.
NO_TIMESTAMP: Final = -1

_INT32_MAX: Final = 2**31 - 1
DEFAULT_MAX_BATCH_BYTES: Final = 1024 * 1024

# Kafka error codes specific to record validation.
MESSAGE_TOO_LARGE: Final = 10
INVALID_TIMESTAMP: Final = 32
INVALID_RECORD: Final = 87


class BatchTooLarge(InvalidRequest):
    """A batch exceeds the configured maximum; the producer must split it."""

    kafka_code = MESSAGE_TOO_LARGE


class InvalidTimestamp(InvalidRequest):
    """A batch timestamp is outside the accepted skew from broker time."""

    kafka_code = INVALID_TIMESTAMP


class InvalidRecord(InvalidRequest):
    """A well-framed batch that a client must never send (control, sparse, unsequenced)."""

    kafka_code = INVALID_RECORD


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 61-byte prefix of a v2 record batch, as stored on the wire."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LENGTH_FIELD_END

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        return last_sequence(self.base_sequence, self.last_offset_delta)

    @property
    def compression(self) -> int:
        return self.attributes & _COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        return TIMESTAMP_LOG_APPEND_TIME if self.attributes & _TIMESTAMP_TYPE_MASK else TIMESTAMP_CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_MASK)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0


def last_sequence(base_sequence: int, delta: int) -> int:
    """Sequence number of the record ``delta`` after ``base_sequence``.

    Kafka sequences wrap from ``2**31 - 1`` back to 0 rather than going
    negative; ``-1`` (no sequence) stays ``-1``.
    """
    if base_sequence < 0:
        return base_sequence
    return (base_sequence + delta) % (_INT32_MAX + 1)


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Read the batch header at ``pos``; only the header bytes need to be present."""
    if pos < 0 or len(buf) - pos < HEADER_SIZE:
        raise CorruptData("record batch header is truncated", pos=pos, available=max(len(buf) - pos, 0))
    header = BatchHeader(*HEADER_STRUCT.unpack_from(buf, pos))
    if header.magic != MAGIC:
        raise CorruptData("unsupported record batch magic", magic=header.magic, pos=pos)
    if header.batch_length < MIN_BATCH_LENGTH:
        raise CorruptData("record batch length is shorter than its header", batch_length=header.batch_length, pos=pos)
    return header


def split_batches(
    buf: bytes | bytearray | memoryview, *, allow_partial: bool = False
) -> list[tuple[int, BatchHeader]]:
    """Positions and headers of the batches laid end to end in ``buf``.

    Strict by default (the produce path): a trailing partial batch is corrupt.
    With ``allow_partial`` (fetch responses, which Kafka may cut mid-batch)
    parsing stops quietly at the first batch that does not fit; a complete
    header with bad framing is still corrupt.
    """
    out: list[tuple[int, BatchHeader]] = []
    end = len(buf)
    pos = 0
    while pos < end:
        if allow_partial and end - pos < HEADER_SIZE:
            break
        header = parse_header(buf, pos)
        nxt = pos + header.size
        if nxt > end:
            if allow_partial:
                break
            raise CorruptData("record batch is truncated", pos=pos, size=header.size, available=end - pos)
        out.append((pos, header))
        pos = nxt
    return out


# --------------------------------------------------------------------------
# Produce validation (header + CRC only)
# --------------------------------------------------------------------------


def batch_crc_ok(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> bool:
    with memoryview(buf) as view:
        return crc32c.crc32c(view[pos + CRC_START : pos + header.size]) == header.crc


def validate_produce_batch(
    buf: bytes | bytearray | memoryview,
    pos: int,
    header: BatchHeader,
    *,
    max_batch_bytes: int,
    now_ms: int | None = None,
    max_timestamp_skew_ms: int | None = None,
) -> None:
    """Check one producer batch the way a Kafka broker does before appending it.

    Header and CRC only: a record whose timestamp sits between the first and
    the maximum is not skew-checked, because that would mean decoding (and
    decompressing) every record on the hot path.
    """
    if header.size > max_batch_bytes:
        raise BatchTooLarge("record batch is larger than the maximum", size=header.size, max=max_batch_bytes)
    if pos + header.size > len(buf):
        raise CorruptData("record batch is truncated", pos=pos, size=header.size, available=len(buf) - pos)
    if not batch_crc_ok(buf, pos, header):
        raise CorruptData("record batch crc mismatch", pos=pos, crc=header.crc)
    if header.compression not in COMPRESSION_NAMES:
        raise CorruptData("unknown record batch compression", compression=header.compression, pos=pos)
    if header.is_control:
        raise InvalidRecord("clients may not write control batches", pos=pos)
    if header.record_count < 1:
        raise InvalidRecord("record batch has no records", record_count=header.record_count, pos=pos)
    if header.last_offset_delta != header.record_count - 1:
        raise InvalidRecord(
            "record batch offsets are not dense",
            last_offset_delta=header.last_offset_delta,
            record_count=header.record_count,
            pos=pos,
        )
    if header.has_producer_id and header.base_sequence < 0:
        raise InvalidRecord("idempotent batch has no sequence", producer_id=header.producer_id, pos=pos)
    if header.is_transactional and not header.has_producer_id:
        raise InvalidRecord("transactional batch has no producer id", pos=pos)
    if max_timestamp_skew_ms is not None:
        if now_ms is None:
            raise InvalidRequest("timestamp skew check needs now_ms")
        _check_timestamp(header.base_timestamp, now_ms, max_timestamp_skew_ms, pos)
        _check_timestamp(header.max_timestamp, now_ms, max_timestamp_skew_ms, pos)


def _check_timestamp(ts: int, now_ms: int, skew_ms: int, pos: int) -> None:
    if ts != NO_TIMESTAMP and abs(ts - now_ms) > skew_ms:
        raise InvalidTimestamp("record timestamp is out of range", timestamp=ts, now=now_ms, max_skew=skew_ms, pos=pos)


def validate_produce_records(
    buf: bytes | bytearray | memoryview,
    *,
    max_batch_bytes: int,
    now_ms: int | None = None,
    max_timestamp_skew_ms: int | None = None,
    allow_multiple_batches: bool = False,
) -> list[tuple[int, BatchHeader]]:
    """Validate a producer's records blob for one partition; return its batches.

    Produce v3 and later (every version a supported client sends) carries
    exactly one batch per partition, and Kafka rejects anything else with
    INVALID_RECORD; ``allow_multiple_batches`` lifts that for callers that
    replay stored data.
    """
    batches = split_batches(buf)
    if not batches:
        raise InvalidRecord("produce request has no record batch")
    if len(batches) > 1 and not allow_multiple_batches:
        raise InvalidRecord("produce request must hold exactly one batch per partition", batches=len(batches))
    for pos, header in batches:
        validate_produce_batch(
            buf,
            pos,
            header,
            max_batch_bytes=max_batch_bytes,
            now_ms=now_ms,
            max_timestamp_skew_ms=max_timestamp_skew_ms,
        )
    return batches


def patch_batch(buf: bytearray | memoryview, pos: int, base_offset: int, leader_epoch: int) -> None:
    """Assign the broker's base offset and leader epoch in place (CRC stays valid)."""
    _OFFSET.pack_into(buf, pos, base_offset)
    _INT32.pack_into(buf, pos + _EPOCH_OFFSET, leader_epoch)


def patched_batch(data: bytes, pos: int, size: int, base_offset: int, leader_epoch: int) -> bytes:
    """The batch at ``data[pos:pos + size]`` with the broker's base offset and leader epoch,
    built in one copy (the produce path keeps the request's bytes and never mutates them)."""
    with memoryview(data) as view:
        return b"".join((_OFFSET.pack(base_offset), view[pos + _OFFSET.size:pos + _EPOCH_OFFSET],
                         _INT32.pack(leader_epoch), view[pos + _EPOCH_OFFSET + _INT32.size:pos + size]))


# --------------------------------------------------------------------------
# Record level (tiering, compaction)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record with its absolute offset and effective timestamp.

    For LOG_APPEND_TIME batches the timestamp is the batch's max timestamp,
    which is what consumers see.
    """

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def decode_records(batch: bytes | bytearray | memoryview) -> list[Record]:
    """Decode every record of one complete batch (any of the four codecs).

    The length, magic and CRC are checked first so the C extension only ever
    sees a buffer whose length matches its header.  Offsets must be strictly
    increasing within ``[baseOffset, baseOffset + lastOffsetDelta]``.
    """
    data = bytes(batch)
    header = parse_header(data)
    if header.size != len(data):
        raise CorruptData("record batch length does not match its buffer", size=header.size, available=len(data))
    if not batch_crc_ok(data, 0, header):
        raise CorruptData("record batch crc mismatch", base_offset=header.base_offset, crc=header.crc)
    if header.compression not in COMPRESSION_NAMES:
        raise CorruptData("unknown record batch compression", compression=header.compression)
    if header.record_count < 0:
        raise CorruptData("record batch has a negative record count", record_count=header.record_count)
    try:
        raw = list(_CBatch(data))
    # The extension surfaces corrupt payloads as its own CorruptRecordException,
    # codec errors (cramjam, gzip, zlib) and UnicodeDecodeError for header
    # keys; all of them mean the same thing to us.
    except Exception as exc:
        raise CorruptData(
            "record batch payload does not decode", base_offset=header.base_offset, error=repr(exc)
        ) from exc
    if len(raw) != header.record_count:
        raise CorruptData("record count does not match header", decoded=len(raw), record_count=header.record_count)
    records = [Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in raw]
    _check_offsets(records, header)
    return records


def _check_offsets(records: Sequence[Record], header: BatchHeader) -> None:
    previous = header.base_offset - 1
    for record in records:
        if record.offset <= previous:
            raise CorruptData("record offsets are not increasing", offset=record.offset, previous=previous)
        previous = record.offset
    if records and previous > header.last_offset:
        raise CorruptData("record offset beyond batch last offset", offset=previous, last_offset=header.last_offset)


def build_batches(
    records: Iterable[Record],
    *,
    compression: int = COMPRESSION_NONE,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> list[bytes]:
    """Re-encode records into valid v2 batches that keep their original offsets.

    Each batch's base offset is its first record's offset, deltas are
    relative to it, and ``lastOffsetDelta`` is the last record's delta, so
    compacted batches keep their gaps.  A batch is closed when its
    uncompressed size would pass ``max_batch_bytes``; a single record larger
    than the limit gets a batch of its own.  The C builder keeps compressed
    output even when it came out larger (tiny or incompressible batches),
    so such a batch is rebuilt uncompressed: no batch ever exceeds the limit
    because of compression.

    With a producer id, a record's sequence stays ``base_sequence`` plus its
    offset distance from the first record, across every batch produced here.
    """
    if compression not in COMPRESSION_NAMES:
        raise InvalidRequest("unknown compression", compression=compression)
    if max_batch_bytes < HEADER_SIZE:
        raise InvalidRequest("max batch bytes is smaller than a batch header", max_batch_bytes=max_batch_bytes)
    out: list[bytes] = []
    current: _Pending | None = None
    first_offset = previous = -1
    for record in records:
        offset = record.offset
        if offset < 0 or offset <= previous:
            raise InvalidRequest("record offsets must be non-negative and increasing", offset=offset, previous=previous)
        if first_offset < 0:
            first_offset = offset
        previous = offset
        if current is not None:
            if current.add(record):
                continue
            out.append(current.finish())
        sequence = last_sequence(base_sequence, offset - first_offset) if producer_id >= 0 else base_sequence
        current = _Pending(record, compression, producer_id, producer_epoch, sequence, max_batch_bytes)
    if current is not None:
        out.append(current.finish())
    return out


class _Pending:
    """One batch being built, with its records kept for an uncompressed rebuild."""

    __slots__ = ("base_offset", "builder", "compression", "max_bytes", "producer", "records")

    def __init__(
        self, first: Record, compression: int, producer_id: int, producer_epoch: int, sequence: int, max_bytes: int
    ) -> None:
        self.base_offset = first.offset
        self.compression = compression
        self.producer = (producer_id, producer_epoch, sequence)
        self.max_bytes = max_bytes
        self.builder = self._new_builder(compression)
        self.records = [first]
        self._append(self.builder, first)

    def _new_builder(self, compression: int) -> _CBuilder:
        return _CBuilder(MAGIC, compression, 0, *self.producer, self.max_bytes)

    def add(self, record: Record) -> bool:
        """Append ``record`` unless the batch is full or its delta would leave int32.

        The C builder takes a first timestamp of -1 (NO_TIMESTAMP) to mean
        "not set yet" and would re-base later records on the next one, so a
        batch started by such a record only takes more of the same.
        """
        if record.offset - self.base_offset > _INT32_MAX:
            return False
        if self.records[0].timestamp == NO_TIMESTAMP and record.timestamp != NO_TIMESTAMP:
            return False
        if not self._append(self.builder, record):
            return False
        self.records.append(record)
        return True

    def _append(self, builder: _CBuilder, record: Record) -> bool:
        try:
            meta = builder.append(
                record.offset - self.base_offset, record.timestamp, record.key, record.value, list(record.headers)
            )
        except (TypeError, OverflowError, UnicodeEncodeError) as exc:
            raise InvalidRequest("record cannot be encoded", offset=record.offset, error=repr(exc)) from exc
        return meta is not None

    def finish(self) -> bytes:
        plain_size = self.builder.size()
        buf = self.builder.build()
        if self.compression != COMPRESSION_NONE and len(buf) >= plain_size:
            plain = self._new_builder(COMPRESSION_NONE)
            for record in self.records:
                self._append(plain, record)
            buf = plain.build()
        _OFFSET.pack_into(buf, 0, self.base_offset)
        return bytes(buf)
