"""`recover`: rebuilding the metadata store from a bucket alone, over the embedded adapters.

The logs are written with the real commit protocol (`LogWriter`), orphans are
left the ways the protocol leaves them, and the recovered table is read back
the way a broker does: a new session acquires each partition and a
`LogReader` walks every offset.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import AsyncIterator

import pytest

from tidelog.storage import keys
from tidelog.storage.adapters.localdir import LocalObjectStore
from tidelog.storage.adapters.sqlite import SqliteMetaStore
from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import ManualClock
from tidelog.storage.errors import InvalidRequest
from tidelog.storage.gc import find_orphans
from tidelog.storage.partition_log import FlushGroup, LogWriter
from tidelog.storage.producer_ids import ProducerIdAllocator
from tidelog.storage.reader import LogReader
from tidelog.storage.records import Record, build_batches, decode_records, patch_batch
from tidelog.storage.recovery import RECOVERED_CONFIGS, parse_tier_key, recover
from tidelog.storage.segments import BatchEntry, encode_ingest_segment
from tidelog.storage.sessions import BrokerInfo, Session
from tidelog.storage.tier_codec import decode_chunk, encode_tier
from tidelog.storage.tier_items import TierHead, TierSegment


class Log:
    """One topic's partitions led by one writer, with the records each committed offset holds."""

    def __init__(self, writer: LogWriter, topic) -> None:
        self.writer = writer
        self.topic = topic
        self.leases = {}
        self.next = {}
        self.committed: dict[int, dict[int, bytes]] = {}

    async def acquire(self, partition: int) -> None:
        recovered = await self.writer.acquire(self.topic.name, self.topic.topic_id, partition)
        self.leases[partition] = recovered.lease
        self.next[partition] = recovered.next_offset

    def group(self, partition: int, values: list[bytes], *, producer: tuple[int, int] | None = None) -> FlushGroup:
        base = self.next[partition]
        return FlushGroup(self.topic.name, self.topic.topic_id, partition,
                          [entry(base, values, self.leases[partition].leader_epoch, producer)])

    async def commit(self, *groups: FlushGroup) -> None:
        await self.writer.commit(groups)
        for g in groups:
            for e in g.entries:
                for r in decode_records(e.batch):
                    self.committed.setdefault(g.partition, {})[r.offset] = r.value
                self.next[g.partition] = e.last_offset + 1

    async def orphan(self, *groups: FlushGroup) -> str:
        """PUT a flush and never commit it (crash before the commit, or a fenced broker)."""
        seq = self.writer.next_seq
        self.writer.next_seq += 1
        key = keys.ingest_object_key(self.writer.session.name, seq)
        segment = encode_ingest_segment([(g.topic, g.partition, g.entries) for g in groups],
                                        writer=self.writer.session.name, seq=seq, created_ms=seq)
        await self.writer.objects.put_if_absent(key, segment.data)
        return key


def entry(base: int, values: list[bytes], leader_epoch: int, producer: tuple[int, int] | None) -> BatchEntry:
    pid, seq = producer if producer else (-1, -1)
    batch = bytearray(build_batches([Record(i, 1_700_000_000_000 + base + i, b"k", v) for i, v in enumerate(values)],
                                    producer_id=pid, producer_epoch=0 if producer else -1, base_sequence=seq)[0])
    patch_batch(batch, 0, base, leader_epoch)
    return BatchEntry.from_batch(bytes(batch))


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[LocalObjectStore, SqliteMetaStore, SqliteMetaStore]]:
    objects = await LocalObjectStore.open(tmp_path / "bucket")
    primary = await SqliteMetaStore.open(tmp_path / "primary.db")
    fresh = await SqliteMetaStore.open(tmp_path / "recovered.db")
    for store in (objects, primary):
        await store.ensure(create=True)
    try:
        yield objects, primary, fresh
    finally:
        for store in (objects, primary, fresh):
            await store.close()


async def session(meta, node: int, clock: ManualClock) -> Session:
    return await Session.register(meta, BrokerInfo(node, "127.0.0.1", 9092 + node), clock.now_ms())


async def read_all(objects, meta, topic_id: str, partition: int, end: int) -> dict[int, bytes]:
    reader = LogReader(objects, meta)
    out: dict[int, bytes] = {}
    offset = 0
    while offset < end:
        refs = await reader.locate(topic_id, partition, offset)
        assert refs, f"nothing holds offset {offset}"
        for ref in refs:
            for e in await reader.read(ref):
                for r in decode_records(e.batch):
                    if r.offset >= offset:
                        assert r.offset not in out, f"offset {r.offset} served twice"
                        out[r.offset] = r.value
                offset = max(offset, e.last_offset + 1)
    return out


async def test_recovered_table_serves_every_committed_record_and_no_orphan(stores) -> None:
    objects, primary, fresh = stores
    clock = ManualClock()
    topic = await Catalog(primary).create("orders", 3, {"retention.ms": "3600000"})
    first = Log(LogWriter(objects, primary, await session(primary, 0, clock), clock), topic)
    for p in (0, 1):
        await first.acquire(p)
    await first.commit(first.group(0, [b"a0", b"a1"], producer=(7, 0)), first.group(1, [b"b0"]))
    await first.commit(first.group(0, [b"a2"], producer=(7, 2)))
    await first.commit(first.group(0, [b"a3", b"a4"], producer=(7, 3)), first.group(1, [b"b1", b"b2"]))
    # The broker is fenced while its next flush is in flight: the object lands, the commit never does.
    zombie = await first.orphan(first.group(0, [b"zombie-5", b"zombie-6", b"zombie-7"]))
    await first.writer.session.close()

    second = Log(LogWriter(objects, primary, await session(primary, 1, clock), clock), topic)
    await second.acquire(0)
    assert second.leases[0].leader_epoch == 2 and second.next[0] == 5
    # A voided commit: same leader, same offsets, a later seq wins.
    voided = await second.orphan(second.group(0, [b"void-5"]))
    await second.commit(second.group(0, [b"c5", b"c6"], producer=(7, 5)))
    await second.commit(second.group(0, [b"c7"]))

    report = await recover(objects, fresh, clock)

    assert report.topics == {"orders": 2}
    assert sorted(r.object_key for r in report.rejected) == sorted([zombie, voided])
    assert report.holes == [] and report.scan.corrupt == []
    assert report.index_objects == 2

    # A broker on the new table: its session epochs pass every old one, so its keys never collide.
    topic_after = await Catalog(fresh).require("orders")
    assert topic_after.configs == RECOVERED_CONFIGS
    broker = await session(fresh, 0, clock)
    assert broker.epoch == 2
    assert (await session(fresh, 1, clock)).epoch == 2
    writer = LogWriter(objects, fresh, broker, clock)
    expected = {0: first.committed[0] | second.committed[0], 1: first.committed[1]}
    for p in (0, 1):
        recovered = await writer.acquire("orders", topic_after.topic_id, p)
        assert recovered.lease.leader_epoch == (3 if p == 0 else 2)
        assert recovered.next_offset == max(expected[p]) + 1
        assert await read_all(objects, fresh, topic_after.topic_id, p, recovered.next_offset) == expected[p]
        if p == 0:  # the idempotent producer's recent batches, so a retried batch is deduplicated
            assert recovered.producers.check(7, 0, 5, 6).action == "duplicate"
    assert await ProducerIdAllocator(fresh).allocate() == 8
    # Exactly the unused objects are garbage to the orphan collector.
    wall_clock_ms = time.time_ns() // 1_000_000 + 60_000  # object mtimes are real time
    assert await find_orphans(objects, fresh, 0, wall_clock_ms) == sorted([zombie, voided])

    with pytest.raises(InvalidRequest):
        await recover(objects, fresh, clock)


async def test_tier_segments_are_indexed_again_with_their_topic_id(stores) -> None:
    objects, primary, fresh = stores
    clock = ManualClock()
    topic = await Catalog(primary).create("events", 1)
    log = Log(LogWriter(objects, primary, await session(primary, 0, clock), clock), topic)
    await log.acquire(0)
    for n in range(4):
        await log.commit(log.group(0, [b"v%d-%d" % (n, i) for i in range(3)]))
    # Offsets [0, 6) were tiered (the ingest objects stay until GC), then 12 more were written.
    records = [Record(o, 1_700_000_000_000 + o, b"k", log.committed[0][o]) for o in range(6)]
    encoded = encode_tier("events", 0, records, codec="zstandard", chunk_bytes=8)
    tier_key = keys.tier_object_key("events", 0, topic.topic_id, 0, 6, encoded.digest)
    await objects.put_if_absent(tier_key, encoded.data)
    assert parse_tier_key(tier_key).topic_id == topic.topic_id

    report = await recover(objects, fresh, clock)

    plan = report.partitions[0]
    assert [t.object_key for t in plan.tier] == [tier_key]
    assert [(r.first_offset, r.last_offset) for r in plan.ingest] == [(6, 8), (9, 11)]
    assert (await Catalog(fresh).require("events")).topic_id == topic.topic_id
    pk = keys.partition_pk(topic.topic_id, 0)
    head = TierHead.from_item(topic.topic_id, 0, await fresh.get(pk, keys.TIER_HEAD_SK))
    assert head.end == 6
    [item] = await fresh.query(pk, prefix=keys.TIER_PREFIX)
    segment = TierSegment.from_item(item)
    assert (segment.start, segment.end, segment.record_count) == (0, 6, 6)
    for chunk in segment.chunks:  # the rebuilt chunk table is sound
        data = await objects.get(tier_key, chunk.position, chunk.position + chunk.length)
        assert decode_chunk(data, codec=segment.codec, crc=chunk.crc32c)[0].offset == chunk.first_offset
    # Through the reader, as a broker serves it: tier segment first, then the ingest ranges.
    assert await read_all(objects, fresh, topic.topic_id, 0, 12) == log.committed[0]
    writer = LogWriter(objects, fresh, await session(fresh, 0, clock), clock)
    recovered = await writer.acquire("events", topic.topic_id, 0)
    assert recovered.next_offset == 12
    assert recovered.lease.log_start_offset == 0


async def test_a_corrupt_object_is_reported_and_its_offsets_become_a_hole(stores) -> None:
    objects, primary, fresh = stores
    clock = ManualClock()
    topic = await Catalog(primary).create("t", 1)
    log = Log(LogWriter(objects, primary, await session(primary, 0, clock), clock), topic)
    await log.acquire(0)
    for n in range(3):
        await log.commit(log.group(0, [b"x%d" % n]))
    middle = keys.ingest_object_key(log.writer.session.name, 1)
    data = bytearray(await objects.get(middle))
    data[-20] ^= 0xFF
    await objects.delete(middle)
    await objects.put_if_absent(middle, bytes(data))
    await objects.put_if_absent("ingest/notes.txt", b"not ours")

    report = await recover(objects, fresh, clock)

    assert [k for k, _ in report.scan.corrupt] == [middle]
    assert report.scan.foreign == ["ingest/notes.txt"]
    assert report.holes == [("t", 0, 1, 1)]
    assert report.to_json()["partitions"][0]["next_offset"] == 3
