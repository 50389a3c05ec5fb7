"""The LogManager over the embedded store, driven by a manual clock: retention and time lookups.

Covers the I/O half of retention that the pure `RetentionScan` tests cannot:
finding spans through checkpoints and the uncheckpointed tail, the
conditional log-start write, what reads and ListOffsets answer afterwards,
and that the new log start survives a restart.  Timestamp lookups must read
only the one ref that can hold the answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import AsyncIterator

import pytest

from tidelog.broker.errors import ErrorCode
from tidelog.broker.logs import EARLIEST, LogManager
from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import ManualClock
from tidelog.storage.factory import Storage, StorageConfig, open_storage
from tidelog.storage.partition_log import LogWriter
from tidelog.storage.reader import LogReader
from tidelog.storage.records import Record, build_batches
from tidelog.storage.sessions import BrokerInfo, Session

HOUR = 3_600_000
CHECKPOINT_MS = 60_000


class Harness:
    def __init__(self, storage: Storage, clock: ManualClock) -> None:
        self.storage = storage
        self.clock = clock
        self.logs: LogManager | None = None

    async def start(self, tail_cache_bytes: int = 1 << 20) -> LogManager:
        meta, objects = self.storage.meta, self.storage.objects
        session = await Session.register(meta, BrokerInfo(0, "127.0.0.1", 9092), self.clock.now_ms())
        self.logs = LogManager(LogWriter(objects, meta, session, self.clock), LogReader(objects, meta),
                               Catalog(meta), self.clock, flush_interval_ms=1, flush_bytes=1 << 20,
                               checkpoint_interval_ms=CHECKPOINT_MS, tail_cache_bytes=tail_cache_bytes,
                               retention_check_interval_ms=3_600_000)
        await self.logs.start()
        return self.logs

    async def produce(self, topic: str, timestamp: int, count: int = 2, checkpoint_after: bool = False) -> int:
        """Append one batch of ``count`` records with ``timestamp``; returns its base offset."""
        if checkpoint_after:
            self.clock.advance(CHECKPOINT_MS)  # the flush loop checkpoints right after this flush
        batch = build_batches([Record(i, timestamp, b"k", b"v" * 100) for i in range(count)])[0]
        appended = await self.logs.append(topic, 0, batch, acks=1)
        return appended.base_offset


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    storage = await open_storage(StorageConfig(data_dir=str(tmp_path / "data")))
    await storage.ensure(create=True)
    h = Harness(storage, ManualClock())
    try:
        yield h
    finally:
        if h.logs is not None:
            await h.logs.stop()
        await storage.close()


async def set_config(logs: LogManager, topic: str, **configs: str) -> None:
    updated = await logs.catalog.alter_configs(topic, {k.replace("_", "."): v for k, v in configs.items()})
    await logs.refresh_topic(updated)


async def test_time_retention_advances_the_log_start_across_checkpointed_and_fresh_data(harness: Harness) -> None:
    logs = await harness.start()
    now = harness.clock.now_ms()
    await logs.lead_topic(await logs.catalog.create("t", 1))
    assert await harness.produce("t", now - 5 * HOUR) == 0
    assert await harness.produce("t", now - 3 * HOUR, checkpoint_after=True) == 2
    assert await harness.produce("t", now - 2 * HOUR) == 4
    assert await harness.produce("t", now - 60_000) == 6
    state = logs.state("t", 0)
    assert state.checkpoint_start == 4 and [r.first_offset for r in state.refs] == [4, 6]

    await logs.enforce_retention()  # default retention.ms is 7 days: nothing to do
    assert state.log_start_offset == 0

    await set_config(logs, "t", retention_ms=str(HOUR))
    await logs.enforce_retention()
    assert state.log_start_offset == 6
    read = await logs.read("t", 0, 0, 1 << 20)
    assert (read.error, read.log_start_offset, read.high_watermark) == (ErrorCode.OFFSET_OUT_OF_RANGE, 6, 8)
    read = await logs.read("t", 0, 6, 1 << 20)
    assert read.error == ErrorCode.NONE and read.records
    assert (await logs.offset_for_time("t", 0, EARLIEST))[:2] == (ErrorCode.NONE, 6)
    # A timestamp lookup never answers with an offset below the log start.
    assert (await logs.offset_for_time("t", 0, now - 10 * HOUR))[:2] == (ErrorCode.NONE, 6)

    # Time passes: the last span expires too and the log is empty up to its end.
    harness.clock.advance(HOUR)
    await logs.enforce_retention()
    assert state.log_start_offset == 8
    assert (await logs.offset_for_time("t", 0, EARLIEST))[:2] == (ErrorCode.NONE, 8)
    # Producing continues at the high watermark.
    assert await harness.produce("t", harness.clock.now_ms()) == 8


async def test_the_log_start_survives_a_restart(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    logs = await harness.start()
    now = harness.clock.now_ms()
    await logs.lead_topic(await logs.catalog.create("t", 1, {"retention.ms": str(HOUR)}))
    await harness.produce("t", now - 2 * HOUR)
    await harness.produce("t", now)
    await logs.enforce_retention()
    assert logs.state("t", 0).log_start_offset == 2
    with caplog.at_level(logging.WARNING, logger="tidelog.logs"):
        await logs.stop()
    # A graceful stop hands every lease back (its final checkpoint already exists).
    assert not caplog.records

    logs = await harness.start()
    state = logs.state("t", 0)
    assert (state.log_start_offset, state.high_watermark) == (2, 4)
    read = await logs.read("t", 0, 1, 1 << 20)
    assert read.error == ErrorCode.OFFSET_OUT_OF_RANGE


async def test_bytes_retention_keeps_at_least_the_limit(harness: Harness) -> None:
    logs = await harness.start()
    now = harness.clock.now_ms()
    await logs.lead_topic(await logs.catalog.create("t", 1))
    for i in range(4):
        await harness.produce("t", now, checkpoint_after=i == 1)
    state = logs.state("t", 0)
    sizes = [r.length for r in state.refs]
    assert len(sizes) == 2  # two spans checkpointed, two in memory

    await set_config(logs, "t", retention_bytes=str(2 * sizes[0] + 1))
    await logs.enforce_retention()
    # Four similar spans, limit just over two of them: deleting a second would go below it.
    assert state.log_start_offset == 2
    assert state.log_bytes is not None and state.log_bytes >= 2 * sizes[0] + 1

    await harness.produce("t", now)  # the measured size is maintained as data arrives
    await logs.enforce_retention()
    assert state.log_start_offset == 4


async def test_compacted_topics_are_not_deleted_by_retention(harness: Harness) -> None:
    logs = await harness.start()
    now = harness.clock.now_ms()
    await logs.lead_topic(await logs.catalog.create("c", 1, {"cleanup.policy": "compact", "retention.ms": "1"}))
    await harness.produce("c", now - HOUR)
    await logs.enforce_retention()
    assert logs.state("c", 0).log_start_offset == 0


async def test_timestamp_lookup_reads_only_the_ref_that_holds_the_answer(harness: Harness) -> None:
    logs = await harness.start(tail_cache_bytes=1)  # the tail keeps only the newest batch
    now = harness.clock.now_ms()
    await logs.lead_topic(await logs.catalog.create("t", 1))
    for b in range(6):  # offsets 2b, 2b+1 at now + 10b; the first three batches get checkpointed
        await harness.produce("t", now + 10 * b, checkpoint_after=b == 2)
    state = logs.state("t", 0)
    assert state.checkpoint_start == 6 and len(state.tail) == 1
    objects = harness.storage.objects.stats
    # Newest first, so no earlier lookup has warmed the reader's cache for a later one.
    for b in range(5, -1, -1):
        gets = objects.requests.get("GetObject", 0)
        assert (await logs.offset_for_time("t", 0, now + 10 * b - 5))[:3] == (ErrorCode.NONE, 2 * b, now + 10 * b)
        # One GET: the answer's own ref range, or (first lookup, answered from the tail)
        # the checkpoint index walked past on the way.  Reading every older ref would be 6.
        assert objects.requests.get("GetObject", 0) - gets <= 1, f"batch {b}"
    assert (await logs.offset_for_time("t", 0, now + 51))[:2] == (ErrorCode.NONE, -1)
