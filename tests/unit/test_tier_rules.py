"""Pure rules of retention, compaction and the sweeper, checked against Kafka's semantics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.storage.compaction import cleanable_upper, compact, latest_offsets, tombstones_due
from tidelog.storage.errors import InvalidRequest
from tidelog.storage.maintenance import MaintenanceConfig
from tidelog.storage.model import Item
from tidelog.storage.records import Record
from tidelog.storage.retention import Segment, retained_start
from tidelog.storage.sweeper import covered_below, due, next_marks
from tidelog.storage.tier_items import TierSegment

NOW = 1_000_000


def seg(start: int, end: int, ts: int, size: int = 100) -> Segment:
    return Segment(start, end, ts, size)


def test_time_retention_deletes_old_segments_and_stops_at_the_first_kept() -> None:
    segments = [seg(0, 10, 100), seg(10, 20, 900_000), seg(20, 30, 200), seg(30, 40, 999_999)]
    # The third segment is old too, but Kafka stops at the first segment it keeps.
    assert retained_start(segments, log_start=0, now_ms=NOW, retention_ms=500_000, retention_bytes=-1) == 10
    assert retained_start(segments, log_start=0, now_ms=NOW, retention_ms=-1, retention_bytes=-1) == 0
    # Unknown timestamps are never old enough.
    assert retained_start([seg(0, 10, -1)], log_start=0, now_ms=NOW, retention_ms=0, retention_bytes=-1) == 0


def test_size_retention_keeps_at_least_the_limit() -> None:
    segments = [seg(0, 10, NOW), seg(10, 20, NOW), seg(20, 30, NOW), seg(30, 40, NOW)]
    assert retained_start(segments, log_start=0, now_ms=NOW, retention_ms=-1, retention_bytes=200) == 20
    assert retained_start(segments, log_start=0, now_ms=NOW, retention_ms=-1, retention_bytes=201) == 10
    assert retained_start(segments, log_start=0, now_ms=NOW, retention_ms=-1, retention_bytes=0) == 40
    # Segments already below the log start do not count.
    assert retained_start(segments, log_start=20, now_ms=NOW, retention_ms=-1, retention_bytes=100) == 30


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 50), min_size=1, max_size=12), limit=st.integers(0, 300))
def test_size_retention_matches_kafka(sizes: list[int], limit: int) -> None:
    segments, start = [], 0
    for i, size in enumerate(sizes):
        segments.append(seg(start, start + 5, NOW, size))
        start += 5
    got = retained_start(segments, log_start=0, now_ms=NOW, retention_ms=-1, retention_bytes=limit)
    # Kafka: delete oldest segments while what is left is still at least retention.bytes.
    kept, total, expected = list(segments), sum(sizes), 0
    while kept and total - kept[0].size >= limit:
        total -= kept[0].size
        expected = kept.pop(0).end
    assert got == expected


@st.composite
def keyed_logs(draw) -> list[Record]:
    out = []
    offset = 0
    for _ in range(draw(st.integers(0, 40))):
        offset += draw(st.integers(1, 3))
        key = draw(st.none() | st.sampled_from([b"a", b"b", b"c", b"d"]))
        value = draw(st.none() | st.binary(min_size=1, max_size=3))
        out.append(Record(offset, offset, key, value, ()))
    return out


@settings(max_examples=300, deadline=None)
@given(log=keyed_logs(), drop=st.booleans())
def test_compaction_keeps_exactly_the_latest_record_of_each_key(log: list[Record], drop: bool) -> None:
    latest: dict[bytes, int] = {}
    latest_offsets(log, latest)
    kept = compact(log, latest, drop_tombstones=drop)
    last = {}
    for r in log:
        if r.key is not None:
            last[r.key] = r
    expected = [r for r in log if r.key is None
                or (last[r.key] is r and not (drop and r.value is None))]
    assert kept == expected
    assert [r.offset for r in kept] == sorted(r.offset for r in kept)  # offsets preserved, gaps allowed


def test_compacting_a_clean_section_with_a_dirty_map_drops_superseded_keys_only() -> None:
    clean = [Record(0, 0, b"a", b"1"), Record(1, 0, b"b", b"1"), Record(2, 0, b"c", None)]
    dirty = [Record(3, 0, b"a", b"2"), Record(4, 0, b"c", b"3")]
    latest: dict[bytes, int] = {}
    latest_offsets(dirty, latest)
    assert compact(clean, latest, drop_tombstones=False) == [Record(1, 0, b"b", b"1")]


def tseg(start: int, end: int, ts: int, **kw) -> TierSegment:
    return TierSegment("t", 0, start, end, "o", 1, ts, 1, kw.pop("tombstones", 0), 1, "zstandard", (), **kw)


def test_cleanable_range_ends_before_the_first_dirty_segment_younger_than_the_lag() -> None:
    segments = [tseg(0, 10, 100), tseg(10, 20, 200), tseg(20, 30, 950_000), tseg(30, 40, 300)]
    assert cleanable_upper(segments, 0, NOW, 100_000) == 20
    assert cleanable_upper(segments, 0, NOW, 0) == 40
    assert cleanable_upper(segments, 10, NOW, 100_000) == 20
    assert cleanable_upper(segments, 40, NOW, 0) == 40


def test_tombstones_are_due_only_after_delete_retention_from_first_cleaning() -> None:
    assert not tombstones_due(tseg(0, 1, 0, tombstones=1), NOW, 10)  # never cleaned yet
    assert not tombstones_due(tseg(0, 1, 0, tombstones=1, cleaned_ms=NOW - 5), NOW, 10)
    assert tombstones_due(tseg(0, 1, 0, tombstones=1, cleaned_ms=NOW - 10), NOW, 10)
    assert not tombstones_due(tseg(0, 1, 0, tombstones=0, cleaned_ms=0), NOW, 10)


def ckpt(session: str, log_from: int) -> Item:
    return Item("part#x#0", "ckpt#", {"session": session, "log_from": log_from})


def test_commit_log_coverage_is_the_smallest_log_from_per_session() -> None:
    assert covered_below([ckpt("0-1", 7), ckpt("0-1", 3), ckpt("1-1", 9)]) == {"0-1": 3, "1-1": 9}
    assert covered_below([]) == {}


def test_grace_counts_from_the_first_sighting_and_restarts_after_a_reference() -> None:
    marks = next_marks({}, ["a", "b"], 100)
    assert marks == {"a": 100, "b": 100}
    marks = next_marks(marks, ["a", "c"], 150)  # b was referenced again: forgotten
    assert marks == {"a": 100, "c": 150}
    assert due(marks, 200, 100) == ["a"] and due(marks, 249, 100) == ["a"] and due(marks, 250, 100) == ["a", "c"]


def test_maintenance_options_are_validated() -> None:
    config = MaintenanceConfig.from_options({"target_bytes": "1024", "codec": "snappy", "grace_ms": 5})
    assert (config.tier.target_bytes, config.tier.codec, config.sweep.grace_ms) == (1024, "snappy", 5)
    for bad in ({"nope": 1}, {"codec": "lz4"}, {"target_bytes": 0}, {"grace_ms": -1}, {"concurrency": "x"}):
        with pytest.raises(InvalidRequest):
            MaintenanceConfig.from_options(bad)
