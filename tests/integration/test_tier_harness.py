"""Shared harness for the tiering tests (no tests of its own live here).

`History` drives the real write path -- `Session.register`,
`LogWriter.acquire/commit/checkpoint` -- the way a broker does, and keeps
the expected log of every partition, so tests can compare what
`LogReader` serves before and after tiering, retention, compaction and
sweeps.  `read_log` reads a partition the way the broker's fetch path does:
the caller's uncheckpointed tail refs first, `LogReader.locate` otherwise.
"""

from __future__ import annotations

import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Mapping, Sequence

from tidelog.storage.catalog import Catalog, Topic
from tidelog.storage.clock import ManualClock, SystemClock
from tidelog.storage.factory import Storage, StorageConfig, open_storage
from tidelog.storage.model import SegmentRef
from tidelog.storage.partition_log import CheckpointInput, FlushGroup, LogWriter, PartitionLease
from tidelog.storage.producers import ProducerStates
from tidelog.storage.reader import LogReader
from tidelog.storage.records import Record, build_batches, decode_records, patch_batch
from tidelog.storage.segments import BatchEntry
from tidelog.storage.sessions import BrokerInfo, Session


class WallClock(ManualClock):
    """A manual clock that starts at real time, so object last-modified times compare sensibly."""

    def __init__(self) -> None:
        super().__init__(SystemClock().now_ms())


@dataclass
class Led:
    topic: Topic
    lease: PartitionLease
    next_offset: int
    checkpoint_start: int
    max_timestamp: int = -1
    refs: list[SegmentRef] = field(default_factory=list)
    producers: ProducerStates = field(default_factory=ProducerStates)

    def snapshot(self) -> CheckpointInput:
        return CheckpointInput(self.lease, self.checkpoint_start, self.next_offset, self.max_timestamp,
                               list(self.refs), self.producers)


class History:
    def __init__(self, storage: Storage, clock: ManualClock) -> None:
        self.storage = storage
        self.clock = clock
        self.catalog = Catalog(storage.meta)
        self.led: dict[tuple[str, int], Led] = {}
        self.expected: dict[tuple[str, int], list[Record]] = {}
        self.topics: dict[str, Topic] = {}
        self.writer: LogWriter | None = None

    async def start_session(self, node_id: int = 0) -> None:
        """A new broker session (a restart): later commits go to its commit log."""
        session = await Session.register(self.storage.meta, BrokerInfo(node_id, "127.0.0.1", 9092),
                                         self.clock.now_ms())
        self.writer = LogWriter(self.storage.objects, self.storage.meta, session, self.clock)

    async def create(self, name: str, partitions: int = 1, configs: Mapping[str, str] | None = None) -> Topic:
        topic = await self.catalog.create(name, partitions, dict(configs or {}))
        self.topics[name] = topic
        for p in range(partitions):
            await self.acquire(topic, p)
            self.expected[(name, p)] = []
        return topic

    async def acquire(self, topic: Topic, partition: int) -> None:
        got = await self.writer.acquire(topic.name, topic.topic_id, partition)
        self.led[(topic.name, partition)] = Led(topic, got.lease, got.next_offset, got.next_offset,
                                                got.max_timestamp, [], got.producers)

    async def release_all(self) -> None:
        for led in self.led.values():
            await self.writer.release(led.snapshot())
        self.led.clear()

    async def reacquire_all(self) -> None:
        for name, p in list(self.expected):
            topic = await self.catalog.require(name)
            await self.acquire(topic, p)

    async def flush(self, writes: Mapping[tuple[str, int], Sequence[Sequence[Record]]]) -> None:
        """One commit: for each partition, batches of records (their offsets are assigned here)."""
        groups = []
        for (name, p), batches in writes.items():
            led = self.led[(name, p)]
            entries = []
            for records in batches:
                offset = led.next_offset
                placed = [Record(offset + i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(records)]
                raw = bytearray(build_batches([Record(i, r.timestamp, r.key, r.value, r.headers)
                                               for i, r in enumerate(records)], max_batch_bytes=1 << 30)[0])
                patch_batch(raw, 0, offset, led.lease.leader_epoch)
                entries.append(BatchEntry.from_batch(bytes(raw)))
                self.expected[(name, p)].extend(placed)
                led.next_offset += len(records)
            if entries:
                groups.append(FlushGroup(name, led.topic.topic_id, p, entries))
        if not groups:
            return
        committed = await self.writer.commit(groups)
        for g in groups:
            led = self.led[(g.topic, g.partition)]
            ref = committed.refs[(g.topic_id, g.partition)]
            led.refs.append(ref)
            led.max_timestamp = max(led.max_timestamp, ref.max_timestamp)

    async def checkpoint(self) -> None:
        dirty = [led for led in self.led.values() if led.refs]
        snaps = [led.snapshot() for led in dirty]
        await self.writer.checkpoint(snaps)
        for led, snap in zip(dirty, snaps):
            led.refs = []
            led.checkpoint_start = snap.end_offset

    def topic_id(self, name: str) -> str:
        return self.topics[name].topic_id


async def read_log(reader: LogReader, topic_id: str, partition: int, start: int, end: int,
                   tail: Sequence[SegmentRef] = ()) -> list[Record]:
    """Every record in ``[start, end)`` the way the broker serves it (gaps allowed)."""
    out: list[Record] = []
    offset = start
    while offset < end:
        refs = [r for r in tail if r.last_offset >= offset]
        if not refs or refs[0].first_offset > offset:
            refs = await reader.locate(topic_id, partition, offset) or refs
        if not refs:
            raise AssertionError(f"nothing stored at offset {offset} below {end}")
        for ref in refs:
            for entry in await reader.read(ref):
                if entry.last_offset < offset:
                    continue
                out.extend(r for r in decode_records(entry.batch) if offset <= r.offset < end)
                offset = entry.last_offset + 1
        # Compaction gaps: carry on after the refs, as the broker does.
        offset = max(offset, refs[-1].last_offset + 1)
    return out


@asynccontextmanager
async def embedded(path: Path | None = None) -> AsyncIterator[Storage]:
    with tempfile.TemporaryDirectory(prefix="tidelog-tier-") as tmp:
        storage = await open_storage(StorageConfig(data_dir=str(path or tmp)))
        await storage.ensure(create=True)
        try:
            yield storage
        finally:
            await storage.close()
