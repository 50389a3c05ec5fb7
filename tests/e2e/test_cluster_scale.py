"""Scaling a live cluster out from one broker to three and back in, under idempotent load.

Partitions move by graceful hand-over (flush, commit, checkpoint, release,
then the new owner acquires with recovery), both when brokers join and when
they leave on SIGTERM.  Nothing acknowledged may be lost or duplicated, and
offsets stay contiguous across every move.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.cluster import Load, fault_proxy, make_cluster, read_all, verify  # noqa: F401

TTL_MS = 3000
PARTITIONS = 6

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(240)]


def test_scale_out_to_three_and_back_to_one_under_load(make_cluster) -> None:
    cluster = make_cluster(ttl_ms=TTL_MS)
    cluster.start(0)
    topic = f"sc-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, PARTITIONS)
    cluster.wait_for_leaders(topic, PARTITIONS, 30)
    first = cluster.brokers[0]

    load = Load(first.bootstrap, topic, PARTITIONS, count=1_000_000, rate=1500).start()
    load.wait_acked(2000, 60)
    cluster.start(1, 2)
    started = time.monotonic()
    cluster.wait_for_leaders(topic, PARTITIONS, 60, spread=True)
    out_s = time.monotonic() - started
    mark = load.acked_count()
    load.wait_acked(mark + 3000, 60)

    started = time.monotonic()
    assert cluster.stop(1) == 0
    assert cluster.stop(2) == 0
    leaders = cluster.wait_for_leaders(topic, PARTITIONS, 60)
    in_s = time.monotonic() - started
    assert set(leaders.values()) == {0}
    mark = load.acked_count()
    load.wait_acked(mark + 2000, 60)
    load.stop()
    load.join()

    assert not load.failed, f"{len(load.failed)} records failed: {list(load.failed.items())[:3]}"
    counts = verify(load, read_all(first.bootstrap, topic, PARTITIONS))
    moves = sum(len(cluster.log_events(p, "leading partition")) for p in [first, *cluster.retired])
    print(f"\nscale: 1->3 spread in {out_s:.1f}s, 3->1 in {in_s:.1f}s (two SIGTERMs), {moves} acquisitions; {counts}")
