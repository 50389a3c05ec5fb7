"""Avro segment codecs: round trips, plain-fastavro readability, prefixes, ranges, garbage."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.storage.errors import CorruptData, InvalidRequest
from tidelog.storage.records import Record, build_batches, decode_records, last_sequence, patch_batch
from tidelog.storage.segments import (
    BLOCK_TARGET_BYTES,
    MAX_PREAMBLE_BYTES,
    BatchEntry,
    NeedMoreBytes,
    ProducerBatch,
    SegmentHeader,
    decode_ingest_segment,
    decode_partition_blocks,
    decode_segment_header,
    decode_tier_header,
    decode_tier_segment,
    encode_ingest_segment,
    encode_tier_segment,
)

NOW = 1_700_000_000_000
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Group = tuple[str, int, list[BatchEntry]]

topics = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
headers_st = st.lists(
    st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=6))), max_size=2
).map(tuple)
record_fields = st.tuples(
    st.integers(-1, 2**42), st.one_of(st.none(), st.binary(max_size=20)),
    st.one_of(st.none(), st.binary(max_size=120)), headers_st,
)


def entries_for(
    batches: list[bytes], first_offset: int, leader_epoch: int = 3
) -> list[BatchEntry]:
    """Assign offsets to producer batches the way the broker does: patch, then describe."""
    out = []
    offset = first_offset
    for raw in batches:
        buf = bytearray(raw)
        patch_batch(buf, 0, offset, leader_epoch)
        entry = BatchEntry.from_batch(bytes(buf))
        out.append(entry)
        offset = entry.last_offset + 1
    return out


def producer_batches(
    records: list[Record], compression: int, producer: tuple[int, int, int] | None, max_batch_bytes: int = 1500
) -> list[bytes]:
    pid, epoch, seq = producer or (-1, -1, -1)
    dense = [Record(i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(records)]
    return build_batches(
        dense, compression=compression, max_batch_bytes=max_batch_bytes,
        producer_id=pid, producer_epoch=epoch, base_sequence=seq,
    )


@st.composite
def ingest_groups(draw: st.DrawFn) -> list[Group]:
    names = draw(st.lists(st.tuples(topics, st.integers(0, 2**31 - 1)), min_size=1, max_size=4, unique=True))
    groups = []
    for topic, partition in names:
        fields = draw(st.lists(record_fields, min_size=1, max_size=25))
        records = [Record(0, ts, k, v, h) for ts, k, v, h in fields]
        producer = draw(st.one_of(st.none(), st.tuples(st.integers(0, 2**40), st.integers(0, 9),
                                                       st.integers(0, 2**31 - 1))))
        batches = producer_batches(records, draw(st.integers(0, 4)), producer)
        groups.append((topic, partition, entries_for(batches, draw(st.integers(0, 2**50)))))
    return groups


def small_segment() -> tuple[bytes, list[Group]]:
    groups = []
    for p, topic in enumerate(["orders", "päyments"]):
        records = [Record(0, NOW + i, b"k%d" % i, b"v" * 30, (("h", b"x"),)) for i in range(6)]
        producer = (77, 2, 2**31 - 3) if p else None
        groups.append((topic, p, entries_for(producer_batches(records, 0, producer, max_batch_bytes=300), 10)))
    return encode_ingest_segment(groups, writer="node-1-7", seq=42, created_ms=NOW).data, groups


def expected_items(groups: list[Group]) -> list[tuple[str, int, BatchEntry]]:
    return [(t, p, e) for t, p, entries in groups for e in entries]


def plain_fastavro_records(data: bytes) -> tuple[dict, list[dict]]:
    reader = fastavro.reader(io.BytesIO(data))
    return reader.metadata, list(reader)


# --------------------------------------------------------------------------
# Ingest segments
# --------------------------------------------------------------------------


@given(groups=ingest_groups(), writer=st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
       seq=st.integers(0, 2**40))
@SETTINGS
def test_ingest_round_trip_and_plain_fastavro(groups: list[Group], writer: str, seq: int) -> None:
    segment = encode_ingest_segment(groups, writer=writer, seq=seq, created_ms=NOW)
    header, items = decode_ingest_segment(segment.data)
    assert items == expected_items(groups)
    assert (header.writer, header.seq, header.created_ms) == (writer, seq, NOW)
    assert list(header.partitions) == segment.partitions
    assert header.end == len(segment.data)

    metadata, rows = plain_fastavro_records(segment.data)
    assert metadata["tidelog.format"] == "ingest-v1"
    assert metadata["avro.codec"] == "null"
    assert json.loads(metadata["tidelog.summary"])[0]["position"] == header.data_start
    assert rows == [
        {"topic": t, "partition": p, "base_offset": e.base_offset, "last_offset": e.last_offset,
         "max_timestamp": e.max_timestamp, "record_count": e.record_count, "batch": e.batch}
        for t, p, e in expected_items(groups)
    ]

    for (topic, partition, entries), s in zip(groups, segment.partitions):
        assert (s.topic, s.partition) == (topic, partition)
        assert (s.first_offset, s.last_offset) == (entries[0].base_offset, entries[-1].last_offset)
        assert s.record_count == sum(e.record_count for e in entries)
        assert s.max_timestamp == max(e.max_timestamp for e in entries)
        assert s.producers == tuple(
            ProducerBatch(e.producer_id, e.producer_epoch, e.base_sequence,
                          last_sequence(e.base_sequence, e.last_offset - e.base_offset), e.base_offset, e.last_offset)
            for e in entries if e.producer_id >= 0
        )
        # One ranged GET per partition returns exactly its batches.
        rng = segment.data[s.position : s.end]
        assert decode_partition_blocks(rng) == entries
        assert decode_partition_blocks(rng, expect=s, sync=header.sync) == entries
        records = [r for e in entries for r in decode_records(e.batch)]
        assert [r.offset for r in records] == list(range(s.first_offset, s.last_offset + 1))


@given(groups=ingest_groups())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_header_from_every_prefix(groups: list[Group]) -> None:
    data = encode_ingest_segment(groups, writer="w", seq=1, created_ms=NOW).data
    full = decode_segment_header(data)
    for n in range(full.data_start + 3):
        got = _header_with_retries(data, n)
        assert got == full


def _header_with_retries(data: bytes, n: int) -> SegmentHeader:
    """The recovery loop: each refetch asks for more than it had and no more than exists.

    From :data:`MAX_PREAMBLE_BYTES` on, ``needed`` is the exact header length,
    so one refetch suffices; shorter prefixes need at most two.
    """
    retries = 1 if n >= MAX_PREAMBLE_BYTES else 2
    for _ in range(retries):
        try:
            return decode_segment_header(data[:n])
        except NeedMoreBytes as more:
            assert n < more.needed <= len(data)
            n = more.needed
    return decode_segment_header(data[:n])


def test_a_64_kib_probe_is_enough_for_a_typical_flush() -> None:
    groups = []
    for p in range(100):
        records = [Record(0, NOW + i, None, b"x" * 100, ()) for i in range(20)]
        groups.append(("events", p, entries_for(producer_batches(records, 0, (p, 0, 0)), 10_000 * p)))
    data = encode_ingest_segment(groups, writer="w", seq=1, created_ms=NOW).data
    header = decode_segment_header(data[: 64 * 1024])
    assert len(header.partitions) == 100
    assert header.find("events", 99) is not None and header.find("events", 100) is None


def test_large_partitions_are_split_into_bounded_blocks_that_never_mix_partitions() -> None:
    big = [Record(0, NOW, None, os.urandom(900 * 1024), ())]
    groups = [
        ("a", 0, entries_for(producer_batches(big, 0, None, 1 << 20) * 11, 0)),
        ("b", 1, entries_for(producer_batches(big, 0, None, 1 << 20) * 2, 0)),
    ]
    segment = encode_ingest_segment(groups, writer="w", seq=1, created_ms=NOW)
    blocks = list(fastavro.block_reader(io.BytesIO(segment.data)))
    per_block = [{(r["topic"], r["partition"]) for r in block} for block in blocks]
    assert all(len(s) == 1 for s in per_block)
    assert [next(iter(s)) for s in per_block].count(("a", 0)) >= 3
    assert all(block.size <= BLOCK_TARGET_BYTES for block in blocks)
    _, items = decode_ingest_segment(segment.data)
    assert items == expected_items(groups)


def test_encoding_is_deterministic() -> None:
    data, groups = small_segment()
    assert encode_ingest_segment(groups, writer="node-1-7", seq=42, created_ms=NOW).data == data


def test_summary_producer_entries_unpack_as_six_numbers() -> None:
    data, _ = small_segment()
    header = decode_segment_header(data)
    rows = [tuple(x) for x in header.partitions[1].producers]
    assert all(len(row) == 6 for row in rows)
    pid, epoch, first_seq, last_seq, base, last = rows[-1]
    assert (pid, epoch) == (77, 2)
    assert last_seq == last_sequence(first_seq, last - base)
    assert any(row[3] < row[2] for row in rows)  # this producer's sequences wrap past 2**31 - 1
    assert header.partitions[0].producers == ()


def test_empty_segment_round_trips() -> None:
    segment = encode_ingest_segment([], writer="w", seq=0, created_ms=NOW)
    header, items = decode_ingest_segment(segment.data)
    assert (header.partitions, items, header.end) == ((), [], len(segment.data))
    assert plain_fastavro_records(segment.data)[1] == []


def test_encoder_rejects_inconsistent_input() -> None:
    _, groups = small_segment()
    topic, partition, entries = groups[0]
    e = entries[0]
    cases = [
        [groups[0], groups[0]],  # same partition twice
        [(topic, partition, [])],
        [(topic, partition, [entries[1], entries[0]])],  # offsets going backwards
        [(topic, partition, [replace(e, base_offset=e.base_offset + 1, last_offset=e.last_offset + 1)])],
        [(topic, partition, [replace(e, record_count=e.record_count + 1)])],
        [(topic, partition, [replace(e, producer_id=5, producer_epoch=0, base_sequence=0)])],
        [(topic, partition, [replace(e, batch=e.batch[:-1])])],
        [("", 0, entries)],
        [("\ud800", 0, entries)],
        [(topic, -1, entries)],
    ]
    for groups_ in cases:
        with pytest.raises(InvalidRequest):
            encode_ingest_segment(groups_, writer="w", seq=1, created_ms=NOW)


# --------------------------------------------------------------------------
# Ingest garbage
# --------------------------------------------------------------------------


def test_truncation_at_every_length_is_corrupt() -> None:
    data, _ = small_segment()
    for n in range(len(data)):
        with pytest.raises(CorruptData):
            decode_ingest_segment(data[:n])
    with pytest.raises(CorruptData):
        decode_ingest_segment(data + b"\x00")


def test_every_flipped_byte_is_corrupt() -> None:
    data, _ = small_segment()
    header = decode_segment_header(data)
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        with pytest.raises(CorruptData):
            decode_ingest_segment(bytes(flipped))
        if i >= header.data_start:
            s = next(p for p in header.partitions if p.position <= i < p.end)
            with pytest.raises(CorruptData):
                decode_partition_blocks(bytes(flipped[s.position : s.end]), expect=s, sync=header.sync)
        else:
            try:
                decode_segment_header(bytes(flipped))
            except (CorruptData, NeedMoreBytes):
                pass
            else:
                raise AssertionError(f"flip at {i} went unnoticed")


def _without_epoch(entries: list[BatchEntry]) -> list[BatchEntry]:
    return [replace(e, batch=e.batch[:12] + e.batch[16:]) for e in entries]


@pytest.mark.parametrize("with_sync", [True, False])
def test_ranged_reads_without_a_summary_catch_every_flip_that_matters(with_sync: bool) -> None:
    """Without the summary's range CRC, only the leader epoch (outside the batch CRC) and,
    when the caller does not pass the object's sync marker, a lone block's sync go unchecked."""
    data, _ = small_segment()
    header = decode_segment_header(data)
    s = header.partitions[0]
    rng = data[s.position : s.end]
    expected = decode_partition_blocks(rng)
    sync = header.sync if with_sync else None
    sync_at = rng.rfind(header.sync)
    unverified = []
    for i in range(len(rng)):
        flipped = bytearray(rng)
        flipped[i] ^= 1 << (i % 8)
        try:
            got = decode_partition_blocks(bytes(flipped), sync=sync)
        except CorruptData:
            continue
        assert _without_epoch(got) == _without_epoch(expected)
        unverified.append(i)
    epoch_bytes = {rng.find(e.batch) + at for e in expected for at in range(12, 16)}
    allowed = epoch_bytes if with_sync else epoch_bytes | set(range(sync_at, sync_at + 16))
    assert set(unverified) <= allowed
    assert epoch_bytes <= set(unverified)  # the test would notice if this ever became checked


@given(data=st.binary(max_size=400))
@SETTINGS
def test_random_bytes_never_escape_as_another_error(data: bytes) -> None:
    _assert_only_corrupt(data)
    _assert_only_corrupt(b"Obj\x01" + data)


def _assert_only_corrupt(data: bytes) -> None:
    for decode in (decode_ingest_segment, decode_partition_blocks, decode_tier_segment):
        with pytest.raises(CorruptData):
            decode(data)
    for decode in (decode_segment_header, decode_tier_header):
        with pytest.raises((CorruptData, NeedMoreBytes)) as info:
            decode(data)
        if isinstance(info.value, NeedMoreBytes):
            assert info.value.needed > len(data)


def test_wrong_kind_of_object_is_corrupt() -> None:
    ingest, _ = small_segment()
    tier = encode_tier_segment("t", 0, [Record(0, NOW, None, b"v")])
    with pytest.raises(CorruptData, match="format"):
        decode_tier_segment(ingest)
    with pytest.raises(CorruptData, match="format"):
        decode_ingest_segment(tier)
    foreign = io.BytesIO()
    fastavro.writer(foreign, fastavro.parse_schema({"type": "record", "name": "X", "fields": []}), [{}])
    with pytest.raises(CorruptData):
        decode_ingest_segment(foreign.getvalue())


# --------------------------------------------------------------------------
# Tier segments
# --------------------------------------------------------------------------


@st.composite
def tier_records(draw: st.DrawFn) -> list[Record]:
    offset = draw(st.integers(0, 2**50))
    out = []
    for gap, (ts, key, value, headers) in draw(st.lists(st.tuples(st.integers(1, 50), record_fields), min_size=1,
                                                        max_size=40)):
        out.append(Record(offset, ts, key, value, headers))
        offset += gap
    return out


@given(topic=topics, partition=st.integers(0, 2**31 - 1), records=tier_records(),
       codec=st.sampled_from(["zstandard", "snappy", "null"]))
@SETTINGS
def test_tier_round_trip_and_plain_fastavro(topic: str, partition: int, records: list[Record], codec: str) -> None:
    data = encode_tier_segment(topic, partition, records, codec=codec)
    header, decoded = decode_tier_segment(data)
    assert decoded == records
    assert decode_tier_header(data) == header
    assert (header.topic, header.partition, header.codec) == (topic, partition, codec)
    assert (header.first_offset, header.last_offset) == (records[0].offset, records[-1].offset)
    assert header.record_count == len(records)
    assert header.max_timestamp == max(r.timestamp for r in records)

    metadata, rows = plain_fastavro_records(data)
    assert metadata["tidelog.format"] == "tier-v1" and metadata["avro.codec"] == codec
    assert metadata["tidelog.topic"] == topic and int(metadata["tidelog.partition"]) == partition
    assert rows == [
        {"offset": r.offset, "timestamp": r.timestamp, "key": r.key, "value": r.value,
         "headers": [{"key": k, "value": v} for k, v in r.headers]}
        for r in records
    ]


def test_tier_schema_is_documented_and_namespaced() -> None:
    data = encode_tier_segment("t", 0, [Record(0, NOW, None, b"v", (("a", None),))])
    schema = json.loads(plain_fastavro_records(data)[0]["avro.schema"])
    assert schema["name"].startswith("io.tidelog.") and schema["doc"]
    assert all(field.get("doc") for field in schema["fields"])


def test_tier_default_codec_is_zstandard_and_compresses() -> None:
    records = [Record(i, NOW + i, b"user-%d" % (i % 10), b'{"event":"click","n":%d}' % i * 20) for i in range(500)]
    data = encode_tier_segment("clicks", 3, records)
    assert decode_tier_header(data).codec == "zstandard"
    assert len(data) * 5 < sum(len(r.value or b"") for r in records)


def test_tier_truncation_and_flips_are_corrupt() -> None:
    records = [Record(10 + 2 * i, NOW + i, b"k", b"value-%d" % i, (("h", b"x"),)) for i in range(8)]
    data = encode_tier_segment("t", 1, records, codec="snappy")
    for n in range(len(data)):
        with pytest.raises(CorruptData):
            decode_tier_segment(data[:n])
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        with pytest.raises(CorruptData):
            decode_tier_segment(bytes(flipped))


def test_tier_encoder_rejects_bad_input() -> None:
    with pytest.raises(InvalidRequest):
        encode_tier_segment("t", 0, [])
    with pytest.raises(InvalidRequest):
        encode_tier_segment("t", 0, [Record(3, NOW, None, None), Record(3, NOW, None, None)])
    with pytest.raises(InvalidRequest):
        encode_tier_segment("t", 0, [Record(0, NOW, None, None)], codec="lz4")
    with pytest.raises(InvalidRequest):
        encode_tier_segment("t", 0, [Record(0, NOW, "text", None)])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        encode_tier_segment("", 0, [Record(0, NOW, None, None)])


def test_tier_records_without_timestamps_keep_them() -> None:
    records = [Record(i, -1, None, b"v") for i in range(3)]
    header, decoded = decode_tier_segment(encode_tier_segment("t", 0, records))
    assert header.max_timestamp == -1 and decoded == records
