"""Tiering, the tier read path, retention, compaction and the sweeper, scenario by scenario.

Most scenarios run on the embedded store with a manual clock; the index
swap itself also runs on S3 + DynamoDB (moto).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest

from tidelog.broker.errors import ErrorCode
from tidelog.broker.logs import LogManager
from tidelog.storage import keys
from tidelog.storage.catalog import Catalog
from tidelog.storage.compaction import Compactor
from tidelog.storage.factory import Storage, StorageConfig, open_storage
from tidelog.storage.maintenance import Maintenance, MaintenanceConfig, MaintenanceLoop
from tidelog.storage.partition_log import LogWriter
from tidelog.storage.reader import LogReader
from tidelog.storage.records import Record, build_batches
from tidelog.storage.retention import RetentionService
from tidelog.storage.sessions import BrokerInfo, Session
from tidelog.storage.sweeper import SweepPolicy, Sweeper
from tidelog.storage.tier_items import TierSegment
from tidelog.storage.tier_state import load_partition, raise_floor, tier_segments
from tidelog.storage.tiering import Tierer, TierPolicy
from tests.integration.test_tier_harness import History, WallClock, read_log
from tests.support.stores import LostReplies, puts_to, storage  # noqa: F401 - a fixture

HOUR = 3_600_000
NOW_POLICY = TierPolicy(max_wait_ms=0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    s = await open_storage(StorageConfig(data_dir=str(tmp_path / "data")))
    await s.ensure(create=True)
    try:
        yield s
    finally:
        await s.close()


def records(n: int, ts: int, *, key=lambda i: b"k%d" % i, value: bytes | None = b"v" * 100) -> list[Record]:
    return [Record(0, ts, key(i), value, (("h", b"%d" % i),)) for i in range(n)]


async def history_on(storage: Storage, clock=None, *, partitions: int = 1, configs=None) -> History:
    h = History(storage, clock or WallClock())
    await h.start_session()
    await h.create("t", partitions, configs)
    return h


async def fill(h: History, flushes: int, *, per_flush: int = 5, ts: int | None = None, checkpoint: bool = True,
               **kw) -> None:
    for _ in range(flushes):
        await h.flush({("t", 0): [records(per_flush, h.clock.now_ms() if ts is None else ts, **kw)]})
    if checkpoint:
        await h.checkpoint()


async def read_all(h: History, storage: Storage, start: int = 0) -> list[Record]:
    led = h.led[("t", 0)]
    return await read_log(LogReader(storage.objects, storage.meta), led.topic.topic_id, 0, start, led.next_offset,
                          led.refs)


async def items(storage: Storage, h: History, prefix: str) -> list:
    return await storage.meta.query(keys.partition_pk(h.topic_id("t"), 0), prefix=prefix)


async def topic(h: History):
    return await h.catalog.require("t")


# --------------------------------------------------------------------------
# Tiering
# --------------------------------------------------------------------------


async def test_only_checkpointed_data_is_tiered_and_the_newest_checkpoint_survives(storage: Storage) -> None:
    h = await history_on(storage)
    await fill(h, 3)
    await fill(h, 2)
    await fill(h, 1, checkpoint=False)  # the tail: only the leader has it
    result = await Tierer(storage.objects, storage.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    assert (result.state, result.segments, result.records, result.checkpoints_deleted) == ("tiered", 1, 25, 2)
    view = await load_partition(storage.meta, h.topic_id("t"), 0)
    assert view.head.end == 25 == view.checkpointed_end
    assert [c.sk for c in await items(storage, h, keys.CHECKPOINT_PREFIX)] == [view.newest.sk]
    [segment] = await tier_segments(storage.meta, h.topic_id("t"), 0)
    assert (segment.start, segment.end, segment.record_count) == (0, 25, 25)
    assert segment.object_key.startswith(keys.tier_prefix("t", 0)) and h.topic_id("t") in segment.object_key
    refs = await LogReader(storage.objects, storage.meta).locate(h.topic_id("t"), 0, 3)
    assert refs[0].kind == "tier" and refs[0].first_offset == 0
    assert await read_all(h, storage) == h.expected[("t", 0)]


async def test_partial_segments_wait_for_max_wait_but_full_ones_do_not(store: Storage) -> None:
    h = await history_on(store)
    t = await topic(h)
    await fill(h, 1)
    tierer = Tierer(store.objects, store.meta, h.clock, TierPolicy(max_wait_ms=60_000, target_bytes=1500))
    assert (await tierer.tier_partition(t, 0)).state == "waiting"
    assert (await load_partition(store.meta, t.topic_id, 0)).head.pending_since == h.clock.now_ms()
    assert await items(store, h, keys.TIER_PREFIX) == []
    h.clock.advance(30_000)
    assert (await tierer.tier_partition(t, 0)).state == "waiting"
    await fill(h, 6)  # now well over the target: full segments go at once, the rest waits
    result = await tierer.tier_partition(t, 0)
    assert result.segments >= 2 and result.state == "tiered"
    tiered = (await load_partition(store.meta, t.topic_id, 0)).head.end
    assert 0 < tiered < 35  # the same round saw the remainder too short and started its wait
    h.clock.advance(59_999)
    assert (await tierer.tier_partition(t, 0)).state == "waiting"
    h.clock.advance(1)
    assert (await tierer.tier_partition(t, 0)).segments == 1
    assert (await load_partition(store.meta, t.topic_id, 0)).head.end == 35
    assert await read_all(h, store) == h.expected[("t", 0)]


async def test_segment_bytes_lowers_the_target(store: Storage) -> None:
    h = await history_on(store, configs={"segment.bytes": "1000"})
    await fill(h, 8)
    result = await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    assert result.segments >= 4
    segments = await tier_segments(store.meta, h.topic_id("t"), 0)
    assert [s.start for s in segments[1:]] == [s.end for s in segments[:-1]]  # contiguous, no overlap
    assert await read_all(h, store) == h.expected[("t", 0)]


async def test_racing_tierers_publish_each_range_exactly_once(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 12)
    policy = TierPolicy(max_wait_ms=0, target_bytes=2000)
    t = await topic(h)
    results = await asyncio.gather(*(Tierer(store.objects, store.meta, h.clock, policy).tier_partition(t, 0)
                                     for _ in range(4)))
    segments = await tier_segments(store.meta, t.topic_id, 0)
    assert segments[0].start == 0 and segments[-1].end == 60
    assert [s.start for s in segments[1:]] == [s.end for s in segments[:-1]]
    assert sum(r.segments for r in results) == len(segments)
    assert await read_all(h, store) == h.expected[("t", 0)]


async def test_every_covered_checkpoint_goes_however_many(store: Storage) -> None:
    h = await history_on(store)
    for _ in range(110):
        await fill(h, 1, per_flush=1)
    result = await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    assert (result.segments, result.checkpoints_deleted) == (1, 110)  # and the empty one from acquiring
    assert len(await items(store, h, keys.CHECKPOINT_PREFIX)) == 1
    assert await read_all(h, store) == h.expected[("t", 0)]


async def test_a_swap_whose_reply_was_lost_still_counts(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 3)
    lossy = LostReplies(store.meta)
    lossy.lose(puts_to(keys.partition_pk(h.topic_id("t"), 0)))
    result = await Tierer(store.objects, lossy, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    assert lossy.lost == 1 and (result.state, result.segments) == ("tiered", 1)
    assert len(await tier_segments(store.meta, h.topic_id("t"), 0)) == 1


class SlowPuts:
    """An object store whose create-only PUTs take ``delay_ms`` of (manual) time."""

    def __init__(self, inner, clock, delay_ms: int) -> None:
        self.inner, self.clock, self.delay_ms = inner, clock, delay_ms

    async def put_if_absent(self, key: str, data: bytes) -> str:
        etag = await self.inner.put_if_absent(key, data)
        self.clock.advance(self.delay_ms)
        return etag

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


async def test_a_swap_too_long_after_its_put_is_abandoned_and_its_object_collected(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 3)
    policy = TierPolicy(max_wait_ms=0, max_commit_delay_ms=1000)
    slow = SlowPuts(store.objects, h.clock, 5000)
    result = await Tierer(slow, store.meta, h.clock, policy).tier_partition(await topic(h), 0)
    assert result.state == "too-slow" and await items(store, h, keys.TIER_PREFIX) == []
    orphans = [i.key async for i in store.objects.list(keys.TIER_ROOT)]
    assert len(orphans) == 1
    h.clock.advance(60_000)
    sweep = await Sweeper(store.objects, store.meta, h.clock, SweepPolicy(grace_ms=0, min_age_ms=10_000)).sweep()
    assert sweep.objects_deleted.get("tier") == 1
    assert await read_all(h, store) == h.expected[("t", 0)]


async def test_tiering_starts_at_the_log_start_floor(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 4)
    await raise_floor(store.meta, h.topic_id("t"), 0, 7)
    await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    [segment] = await tier_segments(store.meta, h.topic_id("t"), 0)
    assert (segment.start, segment.end, segment.record_count) == (7, 20, 13)
    assert await read_all(h, store, start=7) == h.expected[("t", 0)][7:]


# --------------------------------------------------------------------------
# The tier read path
# --------------------------------------------------------------------------


async def tiered(store: Storage, chunk_bytes: int = 1 << 22) -> History:
    """120 records of 10 KiB tiered as one segment: a little over one Avro block (1 MiB)."""
    h = await history_on(store)
    await fill(h, 6, per_flush=20, value=b"v" * 10_240)
    policy = TierPolicy(max_wait_ms=0, chunk_bytes=chunk_bytes)
    await Tierer(store.objects, store.meta, h.clock, policy).tier_partition(await topic(h), 0)
    return h


async def test_a_tier_ref_located_elsewhere_is_read_from_the_whole_object(store: Storage) -> None:
    h = await tiered(store, chunk_bytes=2000)
    refs = await LogReader(store.objects, store.meta).locate(h.topic_id("t"), 0, 50)
    assert len(refs) > 1 and all(r.kind == "tier" for r in refs)
    stranger = LogReader(store.objects, store.meta)  # never located: no chunk checksums
    located = LogReader(store.objects, store.meta)
    await located.locate(h.topic_id("t"), 0, 50)
    for ref in refs:
        assert await stranger.read(ref) == await located.read(ref)


async def test_concurrent_reads_of_one_chunk_share_one_get(store: Storage) -> None:
    h = await tiered(store)
    reader = LogReader(store.objects, store.meta)
    [ref] = await reader.locate(h.topic_id("t"), 0, 0)
    gets = store.objects.stats.requests.get("GetObject", 0)
    results = await asyncio.gather(*(reader.read(ref) for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert store.objects.stats.requests.get("GetObject", 0) == gets + 1
    await reader.read(ref)  # cached
    assert store.objects.stats.requests.get("GetObject", 0) == gets + 1


# --------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------


async def test_time_retention_deletes_whole_segments_and_raises_the_floor(store: Storage) -> None:
    clock = WallClock()
    h = await history_on(store, clock, configs={"retention.ms": str(HOUR)})
    old = clock.now_ms() - 3 * HOUR
    await fill(h, 2, ts=old)
    await fill(h, 2, ts=old)
    await fill(h, 2)  # fresh
    await fill(h, 1, ts=old)  # old again, but after a kept segment: Kafka keeps it
    policy = TierPolicy(max_wait_ms=0, target_bytes=1000)
    await Tierer(store.objects, store.meta, clock, policy).tier_partition(await topic(h), 0)
    await fill(h, 1, ts=old)  # untiered, checkpointed
    await h.release_all()  # no live leader: retention may delete down to its floor
    result = await RetentionService(store.objects, store.meta, clock).enforce(await topic(h), 0)
    assert (result.log_start_before, result.log_start) == (0, 20)
    view = await load_partition(store.meta, h.topic_id("t"), 0)
    assert view.floor == 20 and view.lease_log_start == 0
    assert [s.start for s in await tier_segments(store.meta, h.topic_id("t"), 0)][0] == 20
    assert result.tier_deleted >= 2
    # Recovery still starts from the newest checkpoint, which is never deleted.
    assert (await load_partition(store.meta, h.topic_id("t"), 0)).newest.sk == view.newest.sk
    await h.reacquire_all()
    assert await read_all(h, store, start=20) == h.expected[("t", 0)][20:]


async def test_size_retention_keeps_at_least_the_limit(store: Storage) -> None:
    h = await history_on(store)
    for _ in range(4):
        await fill(h, 1)
    policy = TierPolicy(max_wait_ms=0, target_bytes=1)
    t = await topic(h)
    await Tierer(store.objects, store.meta, h.clock, policy).tier_partition(t, 0)
    sizes = [s.size for s in await tier_segments(store.meta, t.topic_id, 0)]
    assert len(sizes) == 4
    t = await h.catalog.alter_configs("t", {"retention.bytes": str(sizes[2] + sizes[3])})
    await h.release_all()
    result = await RetentionService(store.objects, store.meta, h.clock).enforce(t, 0)
    assert result.log_start == 10 and result.tier_deleted == 2


async def test_with_a_live_leader_only_what_it_dropped_is_deleted(store: Storage) -> None:
    clock = WallClock()
    h = await history_on(store, clock, configs={"retention.ms": str(HOUR)})
    await fill(h, 2, ts=clock.now_ms() - 2 * HOUR)
    await fill(h, 2)
    await Tierer(store.objects, store.meta, clock, TierPolicy(max_wait_ms=0, target_bytes=1000)).tier_partition(
        await topic(h), 0)
    result = await RetentionService(store.objects, store.meta, clock).enforce(await topic(h), 0)
    assert result.log_start == 10 and (result.tier_deleted, result.checkpoints_deleted) == (0, 0)
    # The leader adopts the floor (as `LogManager` does on its retention pass); then it goes.
    led = h.led[("t", 0)]
    await h.writer.set_log_start(led.lease, 10)
    result = await RetentionService(store.objects, store.meta, clock).enforce(await topic(h), 0)
    assert result.tier_deleted == 1


async def test_compacted_topics_keep_everything_under_retention(store: Storage) -> None:
    clock = WallClock()
    h = await history_on(store, clock, configs={"cleanup.policy": "compact", "retention.ms": "1"})
    await fill(h, 2, ts=clock.now_ms() - HOUR)
    await h.release_all()
    result = await RetentionService(store.objects, store.meta, clock).enforce(await topic(h), 0)
    assert result.state == "idle" and result.log_start == 0


async def test_the_broker_adopts_the_retention_floor(tmp_path: Path) -> None:
    storage = await open_storage(StorageConfig(data_dir=str(tmp_path / "data")))
    await storage.ensure(create=True)
    clock = WallClock()
    session = await Session.register(storage.meta, BrokerInfo(0, "127.0.0.1", 9092), clock.now_ms())
    logs = LogManager(LogWriter(storage.objects, storage.meta, session, clock),
                      LogReader(storage.objects, storage.meta), Catalog(storage.meta), clock, flush_interval_ms=1,
                      flush_bytes=1 << 20, checkpoint_interval_ms=1, tail_cache_bytes=1,
                      retention_check_interval_ms=3_600_000)
    await logs.start()
    try:
        t = await logs.catalog.create("t", 1)
        await logs.lead_topic(t)
        for i in range(4):
            batch = build_batches([Record(j, clock.now_ms(), b"k", b"v%d" % i) for j in range(3)])[0]
            await logs.append("t", 0, batch, acks=1)
            clock.advance(10)
        await Tierer(storage.objects, storage.meta, clock, NOW_POLICY).tier_partition(t, 0)
        await raise_floor(storage.meta, t.topic_id, 0, 6)
        await logs.enforce_retention()
        state = logs.state("t", 0)
        assert state.log_start_offset == 6
        assert (await logs.read("t", 0, 5, 1 << 20)).error == ErrorCode.OFFSET_OUT_OF_RANGE
        read = await logs.read("t", 0, 6, 1 << 20)
        assert read.error == ErrorCode.NONE and read.records
        result = await RetentionService(storage.objects, storage.meta, clock).enforce(t, 0)
        assert result.log_start == 6
    finally:
        await logs.stop()
        await storage.close()


# --------------------------------------------------------------------------
# Compaction
# --------------------------------------------------------------------------


def kafka_compacted(log: list[Record], *, drop_tombstones: bool) -> list[Record]:
    """Latest record per key; expired tombstones go, except the log's very last record."""
    last = {}
    for r in log:
        last[r.key] = r.offset
    return [r for r in log if last[r.key] == r.offset
            and not (drop_tombstones and r.value is None and r is not log[-1])]


async def test_compaction_keeps_the_latest_record_per_key_and_drops_tombstones_later(store: Storage) -> None:
    clock = WallClock()
    configs = {"cleanup.policy": "compact", "delete.retention.ms": str(HOUR), "min.compaction.lag.ms": "0"}
    h = await history_on(store, clock, configs=configs)
    for round_ in range(6):
        batch = [Record(0, clock.now_ms() - HOUR, b"key-%d" % (i % 4), None if (i + round_) % 7 == 0 else b"v%d" % i)
                 for i in range(10)]
        await h.flush({("t", 0): [batch]})
        await h.checkpoint()
    t = await topic(h)
    policy = TierPolicy(max_wait_ms=0, target_bytes=600)
    await Tierer(store.objects, store.meta, clock, policy).tier_partition(t, 0)
    compactor = Compactor(store.objects, store.meta, clock, policy)
    result = await compactor.compact_partition(t, 0)
    assert result.state == "compacted" and result.cleaned_to == 60
    log = h.expected[("t", 0)]
    assert [r for r in await read_all(h, store)] == kafka_compacted(log, drop_tombstones=False)
    clock.advance(HOUR - 1)
    await compactor.compact_partition(t, 0)
    assert await read_all(h, store) == kafka_compacted(log, drop_tombstones=False)  # tombstones still there
    clock.advance(1)
    result = await compactor.compact_partition(t, 0)
    assert result.state == "compacted"
    compacted = await read_all(h, store)
    assert compacted == kafka_compacted(log, drop_tombstones=True)
    assert log[-1].value is None and all(r.value is not None for r in compacted[:-1])
    # Ranges still tile the tiered log, even where a segment lost every record.
    segments = await tier_segments(store.meta, t.topic_id, 0)
    assert segments[0].start == 0 and segments[-1].end == 60
    assert [s.start for s in segments[1:]] == [s.end for s in segments[:-1]]


async def test_compaction_leaves_records_younger_than_the_lag(store: Storage) -> None:
    configs = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(HOUR)}
    h = await history_on(store, configs=configs)
    await fill(h, 4, key=lambda i: b"same")
    await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    result = await Compactor(store.objects, store.meta, h.clock).compact_partition(await topic(h), 0)
    assert result.state == "idle" and await read_all(h, store) == h.expected[("t", 0)]
    h.clock.advance(HOUR)
    result = await Compactor(store.objects, store.meta, h.clock).compact_partition(await topic(h), 0)
    assert result.state == "compacted" and [r.offset for r in await read_all(h, store)] == [19]


async def test_an_emptied_segment_still_answers_for_its_range(store: Storage) -> None:
    clock = WallClock()
    configs = {"cleanup.policy": "compact", "delete.retention.ms": "0"}
    h = await history_on(store, clock, configs=configs)
    await fill(h, 2, ts=clock.now_ms() - HOUR, key=lambda i: b"gone", value=None)
    await fill(h, 2, ts=clock.now_ms() - HOUR, key=lambda i: b"kept-%d" % i)
    t = await topic(h)
    policy = TierPolicy(max_wait_ms=0, target_bytes=500)
    await Tierer(store.objects, store.meta, clock, policy).tier_partition(t, 0)
    compactor = Compactor(store.objects, store.meta, clock, policy)
    await compactor.compact_partition(t, 0)  # tombstones of "gone" are kept until cleaned + 0 ms...
    await compactor.compact_partition(t, 0)  # ...then dropped: the first segments hold nothing
    segments = await tier_segments(store.meta, t.topic_id, 0)
    assert segments[0].empty and segments[0].start == 0
    reader = LogReader(store.objects, store.meta)
    refs = await reader.locate(t.topic_id, 0, 0)
    assert refs and refs[0].first_offset >= segments[0].end
    assert [r.offset for r in await read_all(h, store)] == list(range(15, 20))


# --------------------------------------------------------------------------
# The sweeper
# --------------------------------------------------------------------------


async def test_gc_waits_for_the_grace_period_and_keeps_what_is_referenced(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 3)
    await fill(h, 3)
    await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    h.clock.advance(60_000)
    sweeper = Sweeper(store.objects, store.meta, h.clock, SweepPolicy(grace_ms=HOUR, min_age_ms=10_000))
    first = await sweeper.sweep()
    assert first.objects_pending > 0 and first.objects_deleted == {}
    # Every flush is covered by a checkpoint; the live session's latest item stays as proof
    # that its earlier flushes are settled.
    assert first.commit_items_deleted == 5
    h.clock.advance(HOUR)
    second = await sweeper.sweep()
    # The first checkpoint's index and its three flushes were superseded by the tier segment.
    assert second.objects_deleted == {"index": 1, "ingest": 3}
    assert await read_all(h, store) == h.expected[("t", 0)]


async def test_gc_never_considers_young_objects(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 3)
    await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    result = await Sweeper(store.objects, store.meta, h.clock, SweepPolicy(grace_ms=0, min_age_ms=HOUR)).sweep()
    assert (result.objects_pending, result.objects_deleted) == (0, {})


async def test_deleted_topics_are_swept(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 3)
    await Tierer(store.objects, store.meta, h.clock, NOW_POLICY).tier_partition(await topic(h), 0)
    tid = h.topic_id("t")
    await h.release_all()
    await h.catalog.delete("t")
    h.clock.advance(60_000)
    sweeper = Sweeper(store.objects, store.meta, h.clock, SweepPolicy(grace_ms=0, min_age_ms=0))
    first = await sweeper.sweep()
    assert first.deleted_topic_items >= 3 and first.leases_deleted == 1
    assert await store.meta.query(keys.partition_pk(tid, 0)) == []
    assert await store.meta.query(keys.LEASES_PK) == []
    await sweeper.sweep()
    left = [i.key for root in (keys.INGEST_ROOT, keys.INDEX_ROOT, keys.TIER_ROOT)
            for i in [i async for i in store.objects.list(root)]]
    # Only the live session's latest flush stays: its commit-log item is the proof that
    # the session's earlier flushes are settled.
    assert left == [keys.ingest_object_key(h.writer.session.name, 2)]


async def test_concurrent_sweeps_let_one_stand_down(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 2)
    policy = SweepPolicy(grace_ms=0, min_age_ms=0)
    results = await asyncio.gather(*(Sweeper(store.objects, store.meta, h.clock, policy).sweep() for _ in range(2)))
    assert sorted(r.state for r in results) == ["busy", "swept"]


async def test_an_unreadable_index_object_keeps_every_ingest_object(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 2)
    await fill(h, 2)
    [_, first, _] = await items(store, h, keys.CHECKPOINT_PREFIX)  # after the one acquiring wrote
    await store.objects.delete(first.attrs["index"])
    h.clock.advance(60_000)
    sweeper = Sweeper(store.objects, store.meta, h.clock, SweepPolicy(grace_ms=0, min_age_ms=0))
    for _ in range(2):  # the second sweep would find the first two flushes' commit items gone
        result = await sweeper.sweep()
        assert result.errors and "ingest" not in result.objects_deleted
    assert len([i async for i in store.objects.list(keys.INGEST_ROOT)]) == 4


# --------------------------------------------------------------------------
# Running everything
# --------------------------------------------------------------------------


async def test_the_maintenance_loop_runs_every_job_periodically(store: Storage) -> None:
    h = await history_on(store)
    await fill(h, 3)
    maintenance = Maintenance(store.objects, store.meta, h.clock, MaintenanceConfig.from_options({"max_wait_ms": 0}))
    loop = MaintenanceLoop(maintenance, interval_ms=5)
    task = asyncio.create_task(loop.run_forever())
    try:
        for _ in range(2000):
            if loop.rounds >= 2:
                break
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert loop.rounds >= 2
    assert [s.end for s in await tier_segments(store.meta, h.topic_id("t"), 0)] == [15]


async def test_one_failing_partition_does_not_stop_the_others(store: Storage) -> None:
    h = await history_on(store, partitions=2)
    for p in range(2):  # one checkpoint round, hence one index object, each
        await h.flush({("t", p): [records(3, h.clock.now_ms())]})
        await h.checkpoint()
    [_, ckpt] = await store.meta.query(keys.partition_pk(h.topic_id("t"), 1), prefix=keys.CHECKPOINT_PREFIX)
    # Break partition 1 only: its index object now names data that is not there.
    await store.objects.delete(ckpt.attrs["index"])
    await store.objects.put_if_absent(ckpt.attrs["index"], b"not avro")
    summary = await Maintenance(store.objects, store.meta, h.clock,
                                MaintenanceConfig.from_options({"max_wait_ms": 0})).run("tier")
    assert [e["partition"] for e in summary["errors"]] == [1]
    assert [(r["partition"], r["segments"]) for r in summary["results"]] == [(0, 1)]
    assert TierSegment.from_item((await items(store, h, keys.TIER_PREFIX))[0]).end == 3
