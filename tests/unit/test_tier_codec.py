"""Tier segments as chunks, and the tier item layout (pure: no I/O)."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.storage import keys
from tidelog.storage.errors import CorruptData
from tidelog.storage.model import Item, SegmentRef
from tidelog.storage.records import Record, decode_records
from tidelog.storage.tier_codec import decode_chunk, encode_tier, entries_of, record_size, scan_blocks
from tidelog.storage.tier_items import TierHead, TierSegment
from tidelog.storage.tiering import cut, extend_chain


@st.composite
def record_lists(draw, max_size: int = 60) -> list[Record]:
    count = draw(st.integers(1, max_size))
    gaps = draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
    offset = draw(st.integers(0, 10_000))
    out = []
    for gap in gaps:
        out.append(Record(
            offset,
            draw(st.integers(0, 2**41)),
            draw(st.none() | st.binary(max_size=20)),
            draw(st.none() | st.binary(max_size=3000)),
            tuple(draw(st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=2))),
        ))
        offset += gap
    return out


def decode_all_chunks(encoded, codec: str) -> list[Record]:
    out = []
    for c in encoded.chunks:
        out.extend(decode_chunk(encoded.data[c.position:c.position + c.length], codec=codec, crc=c.crc32c))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=record_lists(), codec=st.sampled_from(["zstandard", "snappy", "null"]),
       chunk_bytes=st.sampled_from([1, 4096, 1 << 22]))
def test_chunks_decode_alone_to_exactly_the_records(records: list[Record], codec: str, chunk_bytes: int) -> None:
    encoded = encode_tier("t", 3, records, codec=codec, chunk_bytes=chunk_bytes)
    assert decode_all_chunks(encoded, codec) == records
    # Chunks tile the data section: contiguous, in order, ending at the end of the object.
    data_start, blocks = scan_blocks(encoded.data)
    assert encoded.chunks[0].position == data_start
    for a, b in zip(encoded.chunks, encoded.chunks[1:]):
        assert a.position + a.length == b.position and a.first_offset < b.first_offset
    assert encoded.chunks[-1].position + encoded.chunks[-1].length == len(encoded.data)
    assert (encoded.first_offset, encoded.last_offset, encoded.record_count) == (
        records[0].offset, records[-1].offset, len(records))
    assert encoded.tombstones == sum(r.value is None for r in records)
    assert encoded.raw_bytes == sum(record_size(r) for r in records)
    # A plain Avro reader reads the object with no tidelog code involved.
    plain = list(fastavro.reader(io.BytesIO(encoded.data)))
    assert [(r["offset"], r["timestamp"], r["key"], r["value"]) for r in plain] == [
        (r.offset, r.timestamp, r.key, r.value) for r in records]


def test_block_scan_agrees_with_fastavro() -> None:
    records = [Record(i, i, b"k", bytes([i % 251]) * 5000, ()) for i in range(600)]
    encoded = encode_tier("t", 0, records, codec="zstandard")
    _, blocks = scan_blocks(encoded.data)
    expected = [(b.offset, b.size, b.num_records) for b in fastavro.block_reader(io.BytesIO(encoded.data))]
    assert blocks == expected and len(blocks) > 1


def test_encoding_is_deterministic_so_keys_can_be_content_addressed() -> None:
    records = [Record(i, 1000 + i, b"k%d" % i, b"v", (("h", None),)) for i in range(50)]
    a, b = encode_tier("t", 0, records), encode_tier("t", 0, records)
    assert a.data == b.data and a.digest == b.digest
    assert encode_tier("t", 0, records[:-1]).digest != a.digest


def test_a_flipped_bit_never_decodes() -> None:
    records = [Record(i, 7, None, b"x" * 100, ()) for i in range(100)]
    encoded = encode_tier("t", 0, records, codec="null")
    chunk = encoded.chunks[0]
    data = bytearray(encoded.data[chunk.position:chunk.position + chunk.length])
    data[len(data) // 2] ^= 0x01
    with pytest.raises(CorruptData):
        decode_chunk(bytes(data), codec="null", crc=chunk.crc32c)


def test_rebuilt_batches_keep_offsets_timestamps_headers_and_gaps() -> None:
    records = [Record(10, 5, b"a", b"1", (("h", b"x"), ("h", None))), Record(13, 4, None, None, ()),
               Record(40, 9, b"c", b"3", ())]
    entries = entries_of(records)
    assert [r for e in entries for r in decode_records(e.batch)] == records
    assert entries[0].base_offset == 10 and entries[-1].last_offset == 40


def segment(start: int, end: int, chunk_firsts: list[int], **kw) -> TierSegment:
    from tidelog.storage.tier_codec import Chunk
    chunks = tuple(Chunk(f, 100 * i, 100, i, 50 + i) for i, f in enumerate(chunk_firsts))
    defaults = dict(topic_id="tid", partition=2, start=start, end=end, object_key="tier/x" if chunks else None,
                    size=100 * len(chunks), max_timestamp=99, record_count=len(chunks), tombstones=0,
                    raw_bytes=10, codec="zstandard", chunks=chunks)
    return TierSegment(**{**defaults, **kw})


def test_tier_item_round_trips() -> None:
    seg = segment(5, 30, [7, 12, 20], gen=3, created_ms=11, cleaned_ms=12, tombstones=2)
    item = seg.to_item()
    assert (item.pk, item.sk) == (keys.partition_pk("tid", 2), keys.tier_sk(30))
    assert TierSegment.from_item(item) == seg
    empty = segment(5, 30, [])
    assert TierSegment.from_item(empty.to_item()) == empty and empty.refs(0) == []


def test_chunk_refs_tile_the_segment_range() -> None:
    seg = segment(5, 30, [7, 12, 20])
    refs = seg.refs(0)
    assert [(r.first_offset, r.last_offset) for r in refs] == [(5, 11), (12, 19), (20, 29)]
    assert all(r.kind == "tier" and r.object_key == "tier/x" for r in refs)
    assert [(r.first_offset, r.last_offset) for r in seg.refs(15)] == [(12, 19), (20, 29)]


def test_malformed_tier_items_are_corrupt() -> None:
    item = segment(5, 30, [7]).to_item()
    with pytest.raises(CorruptData):
        TierSegment.from_item(Item(item.pk, keys.tier_sk(31), item.attrs))
    with pytest.raises(CorruptData):
        TierSegment.from_item(Item(item.pk, item.sk, {**item.attrs, "chunks": [[1, 2]]}))


def test_tier_head_defaults_and_advances() -> None:
    head = TierHead.from_item("tid", 0, None)
    assert (head.end, head.version, head.exists) == (0, 0, False)
    moved = head.advanced(40, None)
    assert TierHead.from_item("tid", 0, moved.to_item()) == moved and moved.version == 1


def ref(first: int, last: int, length: int = 10, key: str = "o") -> SegmentRef:
    return SegmentRef(key, first, length, first, last, 0)


def test_chain_is_contiguous_skips_duplicates_and_stops_at_a_hole() -> None:
    candidates = [ref(10, 19), ref(0, 9), ref(0, 9, key="dup"), ref(25, 30), ref(20, 24)]
    assert [(r.first_offset, r.last_offset) for r in extend_chain(candidates, 5, 100)] == [(0, 9), (10, 19),
                                                                                          (20, 24), (25, 30)]
    assert extend_chain([ref(0, 9), ref(12, 20)], 0, 100) == [ref(0, 9)]
    assert extend_chain([ref(3, 9)], 0, 100) == []
    assert extend_chain([ref(0, 9), ref(10, 19)], 0, 10) == [ref(0, 9)]


def test_cut_takes_the_shortest_prefix_reaching_the_target() -> None:
    chain = [ref(0, 9, 40), ref(10, 19, 40), ref(20, 29, 40)]
    assert cut(chain, 80) == chain[:2]
    assert cut(chain, 81) == chain
    assert cut(chain, 1000) == chain
