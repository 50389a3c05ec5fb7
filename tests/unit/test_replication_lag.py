"""Replication lag (RPO) from the two buckets' ingest listings."""

from __future__ import annotations

from tidelog.storage.model import ObjectInfo
from tidelog.storage.replication import replication_lag


def objs(*stamps: int) -> list[ObjectInfo]:
    return [ObjectInfo(f"ingest/0-1/{i:012d}.avro", 10, ms) for i, ms in enumerate(stamps)]


def test_in_sync_is_zero() -> None:
    primary = objs(100, 200, 300)
    lag = replication_lag(primary, [o.key for o in primary])
    assert (lag.lag_ms, lag.missing, lag.in_sync) == (0, 0, True)


def test_empty_buckets_are_in_sync() -> None:
    assert replication_lag([], []).lag_ms == 0


def test_lag_is_measured_from_the_newest_object_the_replica_is_complete_through() -> None:
    primary = objs(100, 200, 300, 400)
    lag = replication_lag(primary, [primary[0].key, primary[1].key])
    assert (lag.lag_ms, lag.missing, lag.complete_through_ms) == (200, 2, 200)


def test_an_old_straggler_holds_the_lag_back_even_when_newer_objects_arrived() -> None:
    primary = objs(100, 200, 300, 400)
    lag = replication_lag(primary, [primary[0].key, primary[2].key, primary[3].key])
    assert (lag.lag_ms, lag.missing) == (300, 1)


def test_lag_is_positive_when_nothing_has_arrived_yet() -> None:
    primary = objs(500)
    lag = replication_lag(primary, [])
    assert lag.lag_ms == 1 and lag.missing == 1


def test_objects_only_the_replica_still_has_do_not_count() -> None:
    primary = objs(100)
    assert replication_lag(primary, [primary[0].key, "ingest/0-1/999999999999.avro"]).lag_ms == 0
