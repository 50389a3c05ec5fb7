"""Record batch v2 codec: header framing, produce validation, patching, record level.

kafka-python's ``kafka.record`` is an independent implementation of the same
format; it builds the golden batches and reads back everything we build.
"""

from __future__ import annotations

import struct
import warnings

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.storage.errors import CorruptData, InvalidRequest, TidelogError
from tidelog.storage.records import (
    COMPRESSION_NAMES,
    CRC_START,
    HEADER_SIZE,
    BatchHeader,
    BatchTooLarge,
    InvalidRecord,
    InvalidTimestamp,
    Record,
    build_batches,
    decode_records,
    last_sequence,
    parse_header,
    patch_batch,
    patched_batch,
    split_batches,
    validate_produce_batch,
    validate_produce_records,
)

with warnings.catch_warnings():
    # kafka-python 3.0.12 loads its protocol schemas through the deprecated
    # importlib.resources.read_text/open_text; not ours to fix.
    warnings.filterwarnings("ignore", r".* is deprecated\. Use files\(\) instead", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch as KafkaPythonBatch
    from kafka.record.memory_records import MemoryRecordsBuilder

CODECS = sorted(COMPRESSION_NAMES)
NOW = 1_700_000_000_000
MIB = 1024 * 1024
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def kafka_python_batch(
    count: int = 5, *, compression: int = 0, producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
    transactional: bool = False,
) -> bytearray:
    """A producer batch as kafka-python's producer would send it (base offset 0)."""
    builder = MemoryRecordsBuilder(
        2, compression, 1 << 20, transactional=transactional,
        producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence,
    )
    for i in range(count):
        headers = [("trace", b"t%d" % i), ("empty", None)] if i % 2 else []
        assert builder.append(NOW + i, b"key-%d" % i if i % 3 else None, b"value-%d" % i * 10, headers) is not None
    builder.close()
    return bytearray(builder.buffer())


def recrc(buf: bytearray, pos: int = 0) -> None:
    """Make a deliberately altered batch pass the CRC, to reach the checks behind it."""
    size = struct.unpack_from(">i", buf, pos + 8)[0] + 12
    struct.pack_into(">I", buf, pos + 17, crc32c.crc32c(bytes(buf[pos + CRC_START : pos + size])))


def read_back(batch: bytes) -> list[tuple]:
    kb = KafkaPythonBatch(batch)
    assert kb.validate_crc()
    return [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in kb]


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------


def test_aiokafka_record_classes_are_the_compiled_extension() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    assert "_crecords" in DefaultRecordBatch.__module__
    assert "_crecords" in DefaultRecordBatchBuilder.__module__


def test_header_matches_kafka_python_view_of_the_same_bytes() -> None:
    buf = bytes(kafka_python_batch(7, compression=1, producer_id=42, producer_epoch=3, base_sequence=100))
    header = parse_header(buf)
    kb = KafkaPythonBatch(buf)
    assert HEADER_SIZE == 61
    assert header.size == len(buf)
    assert header.magic == 2
    assert header.record_count == 7 == header.last_offset_delta + 1
    assert header.compression == kb.compression_type == 1
    assert header.producer_id == kb.producer_id == 42
    assert header.producer_epoch == kb.producer_epoch == 3
    assert header.base_sequence == kb.base_sequence == 100
    assert header.last_sequence == kb.last_sequence == 106
    assert header.base_timestamp == kb.first_timestamp == NOW
    assert header.max_timestamp == kb.max_timestamp == NOW + 6
    assert header.crc == kb.crc
    assert header.has_producer_id and not header.is_transactional and not header.is_control
    assert header.timestamp_type == 0


def test_attribute_bits() -> None:
    base = parse_header(kafka_python_batch(1))
    fields = {f: getattr(base, f) for f in BatchHeader.__slots__}
    flags = BatchHeader(**{**fields, "attributes": 0x08 | 0x10 | 0x20 | 4})
    assert (flags.compression, flags.timestamp_type, flags.is_transactional, flags.is_control) == (4, 1, True, True)


def test_parse_header_rejects_short_input_bad_magic_and_bad_length() -> None:
    buf = kafka_python_batch(2)
    for n in range(HEADER_SIZE):
        with pytest.raises(CorruptData):
            parse_header(bytes(buf[:n]))
    with pytest.raises(CorruptData):
        parse_header(buf, pos=len(buf) - 10)
    bad_magic = bytearray(buf)
    bad_magic[16] = 1
    with pytest.raises(CorruptData, match="magic"):
        parse_header(bad_magic)
    short_len = bytearray(buf)
    struct.pack_into(">i", short_len, 8, 48)
    with pytest.raises(CorruptData, match="length"):
        parse_header(short_len)


@pytest.mark.parametrize(
    ("base", "delta", "expected"),
    [(-1, 5, -1), (0, 0, 0), (10, 5, 15), (2**31 - 1, 0, 2**31 - 1), (2**31 - 3, 5, 2), (2**31 - 1, 1, 0)],
)
def test_last_sequence_wraps_like_kafka(base: int, delta: int, expected: int) -> None:
    assert last_sequence(base, delta) == expected


# --------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------


def test_split_strict_and_lenient_at_every_truncation() -> None:
    batches = [bytes(kafka_python_batch(n)) for n in (1, 3, 2)]
    blob = b"".join(batches)
    ends = [sum(map(len, batches[: i + 1])) for i in range(len(batches))]
    found = split_batches(blob)
    assert [pos for pos, _ in found] == [0, *ends[:-1]]
    assert [h.record_count for _, h in found] == [1, 3, 2]
    for n in range(len(blob) + 1):
        complete = sum(1 for e in ends if e <= n)
        assert len(split_batches(blob[:n], allow_partial=True)) == complete
        if n in (0, *ends):
            assert len(split_batches(blob[:n])) == complete
        else:
            with pytest.raises(CorruptData):
                split_batches(blob[:n])


def test_lenient_split_still_rejects_bad_framing() -> None:
    blob = bytearray(kafka_python_batch(2) + kafka_python_batch(2))
    blob[len(blob) // 2 + 16] = 7  # magic of the second batch
    with pytest.raises(CorruptData, match="magic"):
        split_batches(blob, allow_partial=True)


# --------------------------------------------------------------------------
# Produce validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", CODECS)
def test_kafka_python_golden_batch_validates_patches_and_reads_back(compression: int) -> None:
    buf = kafka_python_batch(6, compression=compression, producer_id=9, producer_epoch=0, base_sequence=0)
    [(pos, header)] = validate_produce_records(buf, max_batch_bytes=MIB, now_ms=NOW, max_timestamp_skew_ms=60_000)
    assert pos == 0 and header.base_offset == 0
    patch_batch(buf, pos, 1_234_567, 17)
    patched = parse_header(buf)
    assert (patched.base_offset, patched.partition_leader_epoch, patched.crc) == (1_234_567, 17, header.crc)
    validate_produce_records(buf, max_batch_bytes=MIB)
    kb = KafkaPythonBatch(bytes(buf))
    assert kb.validate_crc() and kb.leader_epoch == 17
    assert [r.offset for r in kb] == list(range(1_234_567, 1_234_573))
    assert [r.offset for r in decode_records(buf)] == list(range(1_234_567, 1_234_573))


def test_patch_batch_in_the_middle_of_a_blob() -> None:
    blob = bytearray(kafka_python_batch(2) + kafka_python_batch(3))
    batches = split_batches(blob)
    patch_batch(blob, batches[1][0], 2, 5)
    second = bytes(blob[batches[1][0] :])
    assert read_back(second)[0][0] == 2
    assert parse_header(blob).base_offset == 0  # the first batch is untouched


def test_patched_batch_copies_one_batch_out_of_a_blob_with_the_same_patch() -> None:
    original = kafka_python_batch(2) + kafka_python_batch(3)
    (_, first), (pos, second) = split_batches(original)
    expected = bytearray(original[pos:])
    patch_batch(expected, 0, 1_000_000, 9)
    assert patched_batch(original, pos, second.size, 1_000_000, 9) == bytes(expected)
    assert patched_batch(original, 0, first.size, 7, 1) == bytes(patched(original[:first.size], 7, 1))
    assert original == kafka_python_batch(2) + kafka_python_batch(3)  # the input is never written


def patched(batch: bytes, base_offset: int, epoch: int) -> bytearray:
    out = bytearray(batch)
    patch_batch(out, 0, base_offset, epoch)
    return out


def test_every_flipped_bit_under_the_crc_is_caught() -> None:
    buf = kafka_python_batch(3, compression=4)
    for i in range(CRC_START * 8, len(buf) * 8):
        flipped = bytearray(buf)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(TidelogError) as info:
            validate_produce_records(flipped, max_batch_bytes=MIB)
        assert isinstance(info.value, (CorruptData, InvalidRequest))


def test_flipped_crc_field_is_caught() -> None:
    buf = kafka_python_batch(3)
    buf[19] ^= 0x10
    with pytest.raises(CorruptData, match="crc"):
        validate_produce_records(buf, max_batch_bytes=MIB)
    with pytest.raises(CorruptData, match="crc"):
        decode_records(buf)


def test_too_large_is_message_too_large() -> None:
    buf = kafka_python_batch(20)
    with pytest.raises(BatchTooLarge) as info:
        validate_produce_records(buf, max_batch_bytes=len(buf) - 1)
    assert info.value.kafka_code == 10
    validate_produce_records(buf, max_batch_bytes=len(buf))


def test_timestamp_skew_is_invalid_timestamp() -> None:
    buf = kafka_python_batch(3)
    ok = dict(max_batch_bytes=MIB, max_timestamp_skew_ms=1000)
    validate_produce_records(buf, now_ms=NOW + 1000, **ok)
    validate_produce_records(buf, now_ms=NOW + 2 - 1000, **ok)
    for now in (NOW + 1001, NOW + 2 - 1001):
        with pytest.raises(InvalidTimestamp) as info:
            validate_produce_records(buf, now_ms=now, **ok)
        assert info.value.kafka_code == 32
    with pytest.raises(InvalidRequest):
        validate_produce_records(buf, **ok)  # a skew bound needs a clock


def test_no_timestamp_is_not_skew_checked() -> None:
    buf = kafka_python_batch(1)
    struct.pack_into(">qq", buf, 27, -1, -1)
    recrc(buf)
    validate_produce_records(buf, max_batch_bytes=MIB, now_ms=NOW, max_timestamp_skew_ms=1)


def _mutated(**fields: int) -> bytearray:
    buf = kafka_python_batch(3, producer_id=5, producer_epoch=0, base_sequence=0)
    offsets = {"attributes": (21, ">h"), "last_offset_delta": (23, ">i"), "record_count": (57, ">i"),
               "base_sequence": (53, ">i"), "producer_id": (43, ">q")}
    for name, value in fields.items():
        at, fmt = offsets[name]
        struct.pack_into(fmt, buf, at, value)
    recrc(buf)
    return buf


@pytest.mark.parametrize(
    "fields",
    [
        {"attributes": 0x20},  # control batch from a client
        {"attributes": 0x10, "producer_id": -1, "base_sequence": -1},  # transactional, no producer id
        {"last_offset_delta": 5},  # sparse
        {"record_count": 0, "last_offset_delta": -1},
        {"base_sequence": -1},  # idempotent without a sequence
    ],
)
def test_client_rule_violations_are_invalid_record(fields: dict[str, int]) -> None:
    with pytest.raises(InvalidRecord) as info:
        validate_produce_records(_mutated(**fields), max_batch_bytes=MIB)
    assert info.value.kafka_code == 87


def test_unknown_compression_is_corrupt() -> None:
    with pytest.raises(CorruptData, match="compression"):
        validate_produce_records(_mutated(attributes=5), max_batch_bytes=MIB)


def test_exactly_one_batch_per_partition_unless_allowed() -> None:
    with pytest.raises(InvalidRecord):
        validate_produce_records(b"", max_batch_bytes=MIB)
    two = kafka_python_batch(1) + kafka_python_batch(2)
    with pytest.raises(InvalidRecord):
        validate_produce_records(two, max_batch_bytes=MIB)
    assert len(validate_produce_records(two, max_batch_bytes=MIB, allow_multiple_batches=True)) == 2


def test_validate_single_batch_checks_bounds() -> None:
    buf = kafka_python_batch(2)
    header = parse_header(buf)
    with pytest.raises(CorruptData, match="truncated"):
        validate_produce_batch(buf[:-1], 0, header, max_batch_bytes=MIB)
    validate_produce_batch(buf, 0, header, max_batch_bytes=MIB)


# --------------------------------------------------------------------------
# Record level
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", CODECS)
def test_decode_records_of_a_kafka_python_batch(compression: int) -> None:
    buf = kafka_python_batch(5, compression=compression)
    patch_batch(buf, 0, 100, 0)
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in decode_records(buf)] == read_back(
        bytes(buf)
    )


def test_log_append_time_batches_decode_to_the_max_timestamp() -> None:
    buf = kafka_python_batch(3)
    struct.pack_into(">h", buf, 21, 0x08)
    struct.pack_into(">q", buf, 35, NOW + 999)
    recrc(buf)
    assert {r.timestamp for r in decode_records(buf)} == {NOW + 999}


def test_decode_records_rejects_length_mismatch_before_the_extension_sees_it() -> None:
    buf = bytes(kafka_python_batch(3))
    for bad in (buf[:-1], buf + b"\x00", buf[:HEADER_SIZE - 1]):
        with pytest.raises(CorruptData):
            decode_records(bad)


@given(body=st.binary(max_size=200), codec=st.sampled_from(CODECS))
@SETTINGS
def test_garbage_payload_with_a_valid_crc_never_escapes_as_another_error(body: bytes, codec: int) -> None:
    buf = bytearray(kafka_python_batch(2))[:HEADER_SIZE] + body
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">h", buf, 21, codec)
    recrc(buf)
    try:
        decode_records(buf)
    except CorruptData:
        pass


@given(data=st.binary(max_size=300))
@SETTINGS
def test_random_bytes_never_escape_as_another_error(data: bytes) -> None:
    for call in (decode_records, lambda d: split_batches(d), lambda d: split_batches(d, allow_partial=True)):
        try:
            call(data)
        except CorruptData:
            pass


headers_st = st.lists(
    st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8))), max_size=3
).map(tuple)
record_fields = st.tuples(
    st.integers(1, 1000),  # offset gap (compaction leaves holes)
    st.integers(-1, 2**42),  # timestamp
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    headers_st,
)


@st.composite
def record_lists(draw: st.DrawFn, max_size: int = 40) -> list[Record]:
    offset = draw(st.integers(0, 2**40))
    out = []
    for gap, ts, key, value, headers in draw(st.lists(record_fields, min_size=1, max_size=max_size)):
        out.append(Record(offset, ts, key, value, headers))
        offset += gap
    return out


@given(
    records=record_lists(),
    compression=st.sampled_from(CODECS),
    max_batch_bytes=st.integers(HEADER_SIZE, 4000),
    producer=st.one_of(st.none(), st.tuples(st.integers(0, 2**40), st.integers(0, 100), st.integers(0, 2**31 - 1))),
)
@SETTINGS
def test_build_then_decode_round_trip_and_kafka_python_agrees(
    records: list[Record], compression: int, max_batch_bytes: int, producer: tuple[int, int, int] | None
) -> None:
    pid, epoch, seq = producer or (-1, -1, -1)
    batches = build_batches(
        records, compression=compression, max_batch_bytes=max_batch_bytes,
        producer_id=pid, producer_epoch=epoch, base_sequence=seq,
    )
    decoded = []
    for batch in batches:
        header = parse_header(batch)
        batch_records = decode_records(batch)
        assert header.size == len(batch)
        assert header.size <= max_batch_bytes or len(batch_records) == 1
        assert header.base_offset == batch_records[0].offset
        assert header.last_offset == batch_records[-1].offset
        assert header.record_count == len(batch_records)
        assert header.max_timestamp == max(r.timestamp for r in batch_records)
        assert (header.producer_id, header.producer_epoch) == (pid, epoch)
        assert header.base_sequence == (last_sequence(seq, header.base_offset - records[0].offset) if pid >= 0 else -1)
        assert read_back(batch) == [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch_records]
        decoded.extend(batch_records)
    assert decoded == records


def test_build_batches_keeps_missing_timestamps_apart() -> None:
    timestamps = [-1, -1, NOW, -1]
    records = [Record(i, ts, None, b"v%d" % i) for i, ts in enumerate(timestamps)]
    batches = build_batches(records)
    assert len(batches) == 2
    assert [r for b in batches for r in decode_records(b)] == records
    assert [r[1] for b in batches for r in read_back(b)] == timestamps


def test_build_batches_splits_offset_deltas_beyond_int32() -> None:
    records = [Record(0, NOW, None, b"a"), Record(2**31 + 5, NOW, None, b"b")]
    batches = build_batches(records)
    assert [parse_header(b).base_offset for b in batches] == [0, 2**31 + 5]
    assert [r for b in batches for r in decode_records(b)] == records


def test_build_batches_rejects_bad_input() -> None:
    assert build_batches([]) == []
    with pytest.raises(InvalidRequest):
        build_batches([Record(5, NOW, None, None), Record(5, NOW, None, None)])
    with pytest.raises(InvalidRequest):
        build_batches([Record(-1, NOW, None, None)])
    with pytest.raises(InvalidRequest):
        build_batches([Record(0, NOW, None, None)], compression=6)
    with pytest.raises(InvalidRequest):
        build_batches([Record(0, NOW, "text", None)])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        build_batches([Record(0, NOW, None, None)], max_batch_bytes=10)
