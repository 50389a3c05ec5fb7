"""The pure retention decision: which spans at the head of a log are deleted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.storage.retention_rule import RetentionScan, Span

NOW = 1_700_000_000_000
HOUR = 3_600_000


def spans(*specs: tuple[int, int, int]) -> list[Span]:
    """Consecutive spans from offset 0, each given as (record count, max timestamp, size)."""
    out, offset = [], 0
    for count, ts, size in specs:
        out.append(Span(offset, offset + count - 1, ts, size))
        offset += count
    return out


def run(log: list[Span], *, log_start: int = 0, hwm: int | None = None, retention_ms: int = -1,
        retention_bytes: int = -1) -> RetentionScan:
    hwm = log[-1].last_offset + 1 if hwm is None and log else (hwm or 0)
    size = sum(s.size for s in log if s.last_offset >= log_start)
    scan = RetentionScan(log_start=log_start, high_watermark=hwm, now_ms=NOW, retention_ms=retention_ms,
                         retention_bytes=retention_bytes, log_bytes=size if retention_bytes >= 0 else None)
    for span in log:
        if not scan.offer(span):
            break
    return scan


def test_time_deletes_expired_head_and_stops_at_first_kept_span() -> None:
    log = spans((10, NOW - 3 * HOUR, 100), (5, NOW - 2 * HOUR, 100), (5, NOW - 10, 100), (5, NOW - 5 * HOUR, 100))
    scan = run(log, retention_ms=HOUR)
    # The fourth span is older than the limit too, but Kafka never deletes past a kept one.
    assert scan.log_start == 15
    assert scan.deleted_bytes == 200


def test_a_span_exactly_at_the_limit_is_kept() -> None:
    assert run(spans((3, NOW - HOUR, 10)), retention_ms=HOUR).log_start == 0
    assert run(spans((3, NOW - HOUR - 1, 10)), retention_ms=HOUR).log_start == 3


def test_everything_expired_empties_the_log_up_to_the_high_watermark() -> None:
    log = spans((4, NOW - 9 * HOUR, 10), (4, NOW - 8 * HOUR, 10))
    assert run(log, retention_ms=HOUR).log_start == 8


def test_unknown_timestamps_are_never_deleted_by_time() -> None:
    log = spans((4, -1, 10), (4, NOW - 8 * HOUR, 10))
    assert run(log, retention_ms=0).log_start == 0


def test_negative_limits_disable_retention() -> None:
    scan = RetentionScan(log_start=0, high_watermark=9, now_ms=NOW, retention_ms=-1, retention_bytes=-1,
                         log_bytes=None)
    assert not scan.wanted
    assert run(spans((9, 0, 10**9)), retention_ms=-1, retention_bytes=-1).log_start == 0


def test_bytes_deletes_oldest_while_the_rest_still_fills_the_limit() -> None:
    log = spans((1, NOW, 100), (1, NOW, 100), (1, NOW, 100), (1, NOW, 100))
    # 400 bytes, limit 250: deleting one leaves 300 >= 250, a second would leave 200 < 250.
    scan = run(log, retention_bytes=250)
    assert scan.log_start == 1 and scan.deleted_bytes == 100
    assert run(log, retention_bytes=200).log_start == 2
    assert run(log, retention_bytes=0).log_start == 4
    assert run(log, retention_bytes=400).log_start == 0


def test_either_limit_deletes() -> None:
    log = spans((1, NOW - 5 * HOUR, 100), (1, NOW, 100), (1, NOW, 100))
    assert run(log, retention_ms=HOUR, retention_bytes=10_000).log_start == 1
    assert run(log, retention_ms=10 * HOUR, retention_bytes=100).log_start == 2


def test_spans_already_below_the_log_start_are_skipped_and_not_counted() -> None:
    log = spans((5, NOW - 5 * HOUR, 100), (5, NOW - 4 * HOUR, 100), (5, NOW, 100))
    scan = run(log, log_start=5, retention_ms=HOUR)
    assert scan.log_start == 10 and scan.deleted_bytes == 100


def test_a_span_reaching_the_high_watermark_is_never_passed() -> None:
    # A span the caller saw before the high watermark caught up must not be deleted.
    log = spans((5, NOW - 5 * HOUR, 100), (5, NOW - 5 * HOUR, 100))
    assert run(log, hwm=7, retention_ms=HOUR).log_start == 5


def test_offer_after_the_scan_stopped_keeps_refusing() -> None:
    log = spans((1, NOW, 1), (1, NOW - 5 * HOUR, 1))
    scan = run(log, retention_ms=HOUR)
    assert not scan.offer(log[1])
    assert scan.log_start == 0


def test_bytes_limit_needs_the_log_size() -> None:
    with pytest.raises(ValueError):
        RetentionScan(log_start=0, high_watermark=1, now_ms=NOW, retention_ms=-1, retention_bytes=10, log_bytes=None)


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(-1, NOW), st.integers(1, 1000)), min_size=1, max_size=20),
       st.integers(-1, 48 * HOUR), st.integers(-1, 20_000))
def test_scan_properties(specs, retention_ms, retention_bytes) -> None:
    log = spans(*specs)
    scan = run(log, retention_ms=retention_ms, retention_bytes=retention_bytes)
    hwm = log[-1].last_offset + 1
    assert 0 <= scan.log_start <= hwm
    # The new start is always a span boundary, and everything deleted is a prefix.
    assert scan.log_start == 0 or any(s.last_offset + 1 == scan.log_start for s in log)
    deleted = [s for s in log if s.last_offset < scan.log_start]
    assert scan.deleted_bytes == sum(s.size for s in deleted)
    kept = [s for s in log if s.last_offset >= scan.log_start]
    if retention_bytes >= 0:
        # Never delete below the bytes limit unless time retention asked for it.
        if sum(s.size for s in kept) < retention_bytes and deleted:
            last = deleted[-1]
            assert retention_ms >= 0 and 0 <= last.max_timestamp < NOW - retention_ms
    if kept:
        first_kept = kept[0]
        by_time = retention_ms >= 0 and 0 <= first_kept.max_timestamp < NOW - retention_ms
        by_bytes = retention_bytes >= 0 and sum(s.size for s in kept) - first_kept.size >= retention_bytes
        assert not by_time and not by_bytes, "the scan stopped at a span it should have deleted"
