"""The partitions this broker leads: buffering, flushing, checkpointing and reads.

One flush loop per broker collects every partition's pending batches into a
single ingest object, so the object-store PUT count per flush is one whatever
the partition count.  Producers are answered only after the commit succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

from tidelog.storage.catalog import Catalog, Topic
from tidelog.storage.clock import Clock
from tidelog.storage.errors import Fenced, TidelogError
from tidelog.storage.partition_log import FlushGroup, LeaseHeld, LogWriter
from tidelog.storage.reader import LogReader
from tidelog.storage.records import decode_records, patched_batch, validate_produce_records
from tidelog.storage.retention_rule import RetentionScan, Span
from tidelog.storage.segments import BatchEntry
from tidelog.storage.tier_state import log_start_floor

from .errors import ErrorCode
from .metrics import METRICS
from .partition import PartitionState, PendingBatch

log = logging.getLogger("tidelog.logs")


# Budget for checkpoint items per flush, on top of the 4 units of the commit itself:
# keeps a flush at <= 16 write units amortised at any partition count (design 0002).
CHECKPOINT_UNITS_PER_FLUSH = 12


def checkpoint_due(since_last_ms: int, interval_ms: int, flushes_since: int, dirty_partitions: int) -> bool:
    """Checkpoint every interval, but never more often than keeps the amortised
    checkpoint cost at CHECKPOINT_UNITS_PER_FLUSH write units per flush: one item
    (~1 unit) per dirty partition spread over the flushes since the last one."""
    return since_last_ms >= interval_ms and flushes_since * CHECKPOINT_UNITS_PER_FLUSH >= dirty_partitions


class ProduceError(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or str(code))
        self.code = code


@dataclass(frozen=True, slots=True)
class Appended:
    base_offset: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """A buffered batch: ``future`` gives its base offset once its flush commits."""

    future: asyncio.Future
    state: PartitionState


@dataclass(slots=True)
class FetchResult:
    error: int
    high_watermark: int = -1
    log_start_offset: int = -1
    records: bytes = b""


class LogManager:
    def __init__(self, writer: LogWriter, reader: LogReader, catalog: Catalog, clock: Clock, *,
                 flush_interval_ms: int, flush_bytes: int, checkpoint_interval_ms: int,
                 tail_cache_bytes: int, retention_check_interval_ms: int = 60_000) -> None:
        self.writer = writer
        self.reader = reader
        self.catalog = catalog
        self.clock = clock
        self.flush_interval = flush_interval_ms / 1000
        self.flush_bytes = flush_bytes
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.tail_cache_bytes = tail_cache_bytes
        self.retention_check_interval = retention_check_interval_ms / 1000
        self._retention_wake = asyncio.Event()
        self._retainer: asyncio.Task | None = None
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self.topics: dict[str, Topic] = {}
        self._pending_bytes = 0
        self._pending_since_ms: int | None = None  # arrival of the oldest batch not yet taken by a flush
        self._has_pending = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._data_arrived = asyncio.Condition()
        self._flusher: asyncio.Task | None = None
        self._stopping = False
        self._last_checkpoint_ms = clock.monotonic_ms()
        self._flushes_since_checkpoint = 0
        self._acquire_lock = asyncio.Lock()
        # Held around every commit, checkpoint and release: LogWriter requires
        # them not to overlap, and a release must see no flush in flight.
        self._io_lock = asyncio.Lock()
        self.on_fenced: Callable[[], None] | None = None
        self.writable: Callable[[], bool] = lambda: True

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        for topic in await self.catalog.list():
            await self.lead_topic(topic)
        self._flusher = asyncio.create_task(self._flush_loop(), name="flush-loop")
        self._retainer = asyncio.create_task(self._retention_loop(), name="retention")

    async def stop(self) -> None:
        """Flush and commit everything buffered, checkpoint, and hand leases back."""
        self._stopping = True
        self._retention_wake.set()
        if self._retainer is not None:
            # Before any release: a log-start write and a release both bump the lease version.
            await asyncio.gather(self._retainer, return_exceptions=True)
        self._flush_now.set()
        self._has_pending.set()
        if self._flusher is not None:
            await self._flusher
        try:
            async with self._io_lock:
                checkpointed = await self._checkpoint(force=True)

                async def release(key: tuple[str, int], state: PartitionState) -> None:
                    await self.writer.release(state.snapshot(), checkpointed=checkpointed)
                    self.partitions.pop(key, None)
                # Independent conditional writes, one per partition: run them side by side.
                await _bounded_gather([release(k, s) for k, s in list(self.partitions.items())], limit=32)
        except Fenced:
            log.warning("session fenced during shutdown; leases will be recovered by the next owner")

    async def release(self, name: str, partition: int) -> None:
        """Hand a partition over gracefully: stop taking writes, flush and commit
        what is buffered, checkpoint, and release the lease."""
        state = self.partitions.get((name, partition))
        if state is None:
            return
        state.releasing = True
        async with self._io_lock:
            if state.pending:
                await self._flush_once()
            if self.partitions.get((name, partition)) is not state:
                return
            try:
                await self.writer.release(state.snapshot())
            except Fenced:
                log.warning("lease already lost", extra={"topic": name, "partition": partition})
            self.partitions.pop((name, partition), None)
        log.info("released partition", extra={"topic": name, "partition": partition})

    def drop_all(self, writer: LogWriter | None = None) -> None:
        """Forget every partition at once (our session was fenced): fail what is buffered."""
        dropped = 0
        for state in self.partitions.values():
            for pending in state.pending:
                if not pending.future.done():
                    pending.future.set_exception(ProduceError(ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership lost"))
                    dropped += 1
            state.producers.rollback_pending()
        if self.partitions:
            log.warning("dropped every partition; buffered batches failed",
                        extra={"partitions": len(self.partitions), "batches": dropped})
        self.partitions.clear()
        self._pending_bytes = 0
        self._pending_since_ms = None
        if writer is not None:
            self.writer = writer

    # --- leadership --------------------------------------------------------------
    async def lead_topic(self, topic: Topic) -> None:
        self.topics[topic.name] = topic
        for p in range(topic.partitions):
            await self.lead(topic, p)

    async def lead(self, topic: Topic, partition: int) -> PartitionState | None:
        key = (topic.name, partition)
        async with self._acquire_lock:
            current = self.partitions.get(key)
            if current is not None and current.topic.topic_id == topic.topic_id:
                return current
            if self._stopping:
                return None  # shutting down: a lease taken now would never be released
            try:
                recovered = await self.writer.acquire(topic.name, topic.topic_id, partition)
            except LeaseHeld:
                return None
            except Fenced:
                # Our session is over (a request raced the rejoin): lead nothing with it.
                if self.on_fenced is not None:
                    self.on_fenced()
                return None
            state = PartitionState(topic, recovered.lease, recovered.next_offset, recovered.max_timestamp,
                                   recovered.producers, self.tail_cache_bytes, checkpoint_start=recovered.next_offset)
            self.partitions[key] = state
            log.info("leading partition", extra={"topic": topic.name, "partition": partition,
                                                 "next_offset": recovered.next_offset,
                                                 "leader_epoch": recovered.lease.leader_epoch})
            return state

    async def refresh_topic(self, topic: Topic) -> None:
        """Adopt new configs (and partitions) after an admin change."""
        self._retention_wake.set()  # retention.ms / retention.bytes may have changed
        self.topics[topic.name] = topic
        for (name, _), state in self.partitions.items():
            if name == topic.name:
                state.topic = topic
        await self.lead_topic(topic)

    def forget_topic(self, name: str) -> None:
        self.topics.pop(name, None)
        for key in [k for k in self.partitions if k[0] == name]:
            state = self.partitions.pop(key)
            for pending in state.pending:
                if not pending.future.done():
                    pending.future.set_exception(ProduceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))

    def sync_topics(self, catalog: dict[str, Topic], known_before: dict[str, Topic]) -> None:
        """Follow admin changes made through other brokers (the cluster loop reads the
        catalog every tick): adopt newer configs and partition counts, forget deleted
        topics.  ``known_before`` is the cache as it was before that catalog read; an
        entry replaced since (by a request on this broker) is newer and left alone."""
        for name, old in known_before.items():
            if self.topics.get(name) is not old:
                continue
            fresh = catalog.get(name)
            if fresh is None or fresh.topic_id != old.topic_id:
                self.forget_topic(name)
            elif fresh.version > old.version:
                self._retention_wake.set()
                self.topics[name] = fresh
                for (owner, _), state in self.partitions.items():
                    if owner == name:
                        state.topic = fresh

    async def topic(self, name: str) -> Topic | None:
        topic = self.topics.get(name)
        if topic is None:
            topic = await self.catalog.get(name)
            if topic is not None:
                await self.lead_topic(topic)
        return topic

    def state(self, name: str, partition: int) -> PartitionState | None:
        return self.partitions.get((name, partition))

    # --- produce -----------------------------------------------------------------
    async def append(self, name: str, partition: int, records: bytes | None, acks: int) -> Appended:
        """Buffer one partition's batch and wait for its commit (see `enqueue`)."""
        outcome = self.enqueue(await self.topic(name), name, partition, records, acks)
        if isinstance(outcome, Appended):
            return outcome
        return Appended(await asyncio.shield(outcome.future), outcome.state.log_start_offset)

    def enqueue(self, topic: Topic | None, name: str, partition: int, records: bytes | None,
                acks: int) -> Appended | Waiting:
        """Validate and buffer one partition's batch, without suspending: a Produce
        request's partitions are all buffered before it waits once for their flush.

        Returns `Appended` when the answer is known now (acks=0, a duplicate of a
        committed batch), else the future of the batch's base offset.  Raises
        `ProduceError`; nothing is buffered then.
        """
        if topic is None or not 0 <= partition < topic.partitions:
            raise ProduceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        state = self.partitions.get((name, partition))
        if state is None or state.releasing or self._stopping or not self.writable():
            raise ProduceError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        if not records:
            raise ProduceError(ErrorCode.INVALID_RECORD if records is not None else ErrorCode.CORRUPT_MESSAGE)
        try:
            batches = validate_produce_records(records, max_batch_bytes=topic.config_int("max.message.bytes"))
        except TidelogError as exc:
            METRICS.rejected_batches.labels(reason=type(exc).__name__).inc()
            raise ProduceError(exc.kafka_code, str(exc)) from exc
        pos, header = batches[0]
        seq_entry = None
        if header.has_producer_id:
            verdict = state.producers.check(header.producer_id, header.producer_epoch, header.base_sequence,
                                            header.last_sequence)
            if verdict.action == "reject":
                raise ProduceError(verdict.error_code)
            if verdict.action == "duplicate":
                batch = verdict.batch
                if batch.base_offset is not None:
                    return Appended(batch.base_offset, state.log_start_offset)
                pending = state.pending_futures.get((header.producer_id, header.base_sequence))
                if pending is None:
                    raise ProduceError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
                return Waiting(pending, state)
            seq_entry = state.producers.append(header.producer_id, header.producer_epoch, header.base_sequence,
                                               header.last_sequence, timestamp=header.max_timestamp)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        if header.has_producer_id:
            state.pending_futures[(header.producer_id, header.base_sequence)] = future
        state.pending.append(PendingBatch(records, pos, header, future, seq_entry))
        state.pending_bytes += header.size
        if self._pending_since_ms is None:
            self._pending_since_ms = self.clock.monotonic_ms()
        self._pending_bytes += header.size
        self._has_pending.set()
        if self._pending_bytes >= self.flush_bytes:
            self._flush_now.set()
        if acks == 0:
            future.add_done_callback(_consume_exception)
            return Appended(-1, state.log_start_offset)
        return Waiting(future, state)

    # --- flushing ----------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._has_pending.wait(), self.checkpoint_interval_ms / 1000)
            except asyncio.TimeoutError:
                # Idle: checkpoint partitions that went quiet, so their tail is
                # tierable and a takeover need not replay their commit log.
                if any(s.dirty for s in self.partitions.values()):
                    async with self._io_lock:
                        await self._checkpoint()
                continue
            # The interval runs from the oldest batch's arrival, not from the end of the
            # previous flush: a batch that arrived during a commit waits only the rest.
            since = self._pending_since_ms
            delay = self.flush_interval - ((self.clock.monotonic_ms() - since) / 1000 if since is not None else 0)
            if not self._stopping and delay > 0:
                try:
                    await asyncio.wait_for(self._flush_now.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            self._flush_now.clear()
            self._has_pending.clear()
            async with self._io_lock:
                await self._flush_once()
                self._flushes_since_checkpoint += 1
                if self._checkpoint_due():
                    await self._checkpoint()
            if self._stopping and not any(s.pending for s in self.partitions.values()):
                return

    async def _flush_once(self) -> None:
        taken: list[tuple[PartitionState, list[PendingBatch]]] = []
        for state in self.partitions.values():
            if state.pending:
                taken.append((state, state.pending))
                state.pending = []
                state.pending_bytes = 0
        self._pending_bytes = 0
        self._pending_since_ms = None
        if not taken:
            return
        groups = []
        for state, batches in taken:
            offset = state.high_watermark
            entries = []
            epoch = state.lease.leader_epoch
            for b in batches:
                h = b.header
                entries.append(BatchEntry(offset, offset + h.last_offset_delta, h.max_timestamp, h.record_count,
                                          h.producer_id, h.producer_epoch, h.base_sequence,
                                          patched_batch(b.data, b.pos, h.size, offset, epoch)))
                offset += h.last_offset_delta + 1
            groups.append(FlushGroup(state.topic.name, state.topic.topic_id, state.partition, entries))
        started = self.clock.monotonic_ms()
        try:
            committed = await self.writer.commit(groups)
        except Exception as exc:  # noqa: BLE001 - every failure fails the flush, never the loop
            self._fail_flush(taken, exc)
            return
        METRICS.flush_seconds.observe((self.clock.monotonic_ms() - started) / 1000)
        METRICS.flush_bytes.observe(committed.size)
        for (state, batches), group in zip(taken, groups):
            ref = committed.refs[(state.topic.topic_id, state.partition)]
            state.add_committed(group.entries, ref)
            for b, entry in zip(batches, group.entries):
                if b.seq_entry is not None:
                    b.seq_entry.base_offset = entry.base_offset
                    b.seq_entry.last_offset = entry.last_offset
                    state.pending_futures.pop((b.header.producer_id, b.header.base_sequence), None)
                if not b.future.done():
                    b.future.set_result(entry.base_offset)
        async with self._data_arrived:
            self._data_arrived.notify_all()

    def _fail_flush(self, taken, exc: Exception) -> None:
        fenced = isinstance(exc, Fenced)
        code = ErrorCode.NOT_LEADER_OR_FOLLOWER if fenced else ErrorCode.KAFKA_STORAGE_ERROR
        log.error("flush failed", extra={"error": str(exc), "fenced": fenced})
        # Later batches were validated against sequences that now never happened:
        # fail everything buffered for these partitions and roll producer state back.
        for state, batches in taken:
            for b in batches + state.pending:
                if not b.future.done():
                    b.future.set_exception(ProduceError(code, str(exc)))
            state.pending = []
            state.pending_bytes = 0
            state.pending_futures.clear()
            state.producers.rollback_pending()
        if fenced and self.on_fenced is not None:
            self.on_fenced()

    def _checkpoint_due(self) -> bool:
        return checkpoint_due(self.clock.monotonic_ms() - self._last_checkpoint_ms, self.checkpoint_interval_ms,
                              self._flushes_since_checkpoint, sum(1 for s in self.partitions.values() if s.dirty))

    async def _checkpoint(self, force: bool = False) -> bool:
        """Checkpoint dirty partitions (every partition when ``force``); False if it failed."""
        dirty = [s for s in self.partitions.values() if s.dirty or force]
        self._last_checkpoint_ms = self.clock.monotonic_ms()
        self._flushes_since_checkpoint = 0
        if not dirty:
            return True
        snapshots = [s.snapshot() for s in dirty]
        try:
            await self.writer.checkpoint(snapshots)
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.warning("checkpoint failed", extra={"error": str(exc)})
            return False
        for state, snap in zip(dirty, snapshots):
            state.checkpointed(snap)
        return True

    # --- retention ---------------------------------------------------------------
    async def _retention_loop(self) -> None:
        """A pass at start, then every check interval, and at once after a topic config change."""
        while not self._stopping:
            await self.enforce_retention()
            try:
                await asyncio.wait_for(self._retention_wake.wait(), self.retention_check_interval)
            except asyncio.TimeoutError:
                pass
            self._retention_wake.clear()

    async def enforce_retention(self) -> None:
        """Advance every led partition's log start past data older than ``retention.ms`` or
        beyond ``retention.bytes`` (see `retention`); reads below it then get
        OFFSET_OUT_OF_RANGE and ListOffsets(earliest) returns it."""
        for state in list(self.partitions.values()):
            if self._stopping:
                return
            try:
                await self._retain(state)
            except Fenced as exc:
                log.error("lease lost while advancing the log start",
                          extra={"topic": state.topic.name, "partition": state.partition, "error": str(exc)})
                if self.on_fenced is not None:
                    self.on_fenced()
                return
            except Exception as exc:  # noqa: BLE001 - storage trouble; the next pass retries
                log.warning("retention pass failed",
                            extra={"topic": state.topic.name, "partition": state.partition, "error": str(exc)})

    async def _retain(self, state: PartitionState) -> None:
        topic = state.topic
        if "delete" not in topic.config("cleanup.policy") or state.releasing:
            return
        retention_ms = topic.config_int("retention.ms")
        retention_bytes = topic.config_int("retention.bytes")
        if retention_ms < 0 and retention_bytes < 0:
            return
        if retention_bytes >= 0 and state.log_bytes is None:
            # Measured once per leadership, then kept up to date by add_committed.
            state.log_bytes = await self._measure(state)
        start = state.log_start_offset
        scan = RetentionScan(log_start=start, high_watermark=state.high_watermark, now_ms=self.clock.now_ms(),
                             retention_ms=retention_ms, retention_bytes=retention_bytes,
                             log_bytes=state.log_bytes if retention_bytes >= 0 else None)
        async for span in self._spans(state, start):
            if not scan.offer(span):
                break
        # Retention run outside the leader (storage.retention) raises a floor item, not the lease.
        floor = min(await log_start_floor(self.writer.meta, topic.topic_id, state.partition), state.high_watermark)
        new_start = max(scan.log_start, floor)
        if new_start <= start:
            return
        async with self._io_lock:
            if self.partitions.get((topic.name, state.partition)) is not state or state.releasing:
                return
            if state.log_start_offset != start:
                return  # moved meanwhile; the next pass starts from the new value
            await self.writer.set_log_start(state.lease, new_start)
            if state.log_bytes is not None:  # re-measured next pass if the floor moved it further
                state.log_bytes = state.log_bytes - scan.deleted_bytes if new_start == scan.log_start else None
        log.info("log start advanced by retention", extra={"topic": topic.name, "partition": state.partition,
                                                             "log_start_offset": new_start, "previous": start})

    async def _spans(self, state: PartitionState, offset: int):
        async for ref in self._refs(state, offset):
            yield Span(ref.first_offset, ref.last_offset, ref.max_timestamp, ref.length)

    async def _refs(self, state: PartitionState, offset: int):
        """The partition's refs from the one holding ``offset`` up to the high watermark, oldest first.

        Checkpointed data is found through the reader's checkpoint index (one
        Query plus a cached index GET per checkpoint); what was committed
        since the last checkpoint is in ``state.refs``.  The in-memory part is
        yielded without awaiting, so a caller that sums it sees one
        consistent high watermark.  Stops early at a hole it cannot see past.
        """
        while offset < state.high_watermark:
            local = [r for r in state.refs if r.last_offset >= offset]
            if local and local[0].first_offset <= offset:
                break
            refs = [r for r in await self.reader.locate(state.topic.topic_id, state.partition, offset)
                    if r.last_offset >= offset]
            if not refs:
                return
            for ref in refs:
                yield ref
                offset = ref.last_offset + 1
        for ref in state.refs:
            if ref.last_offset >= offset:
                yield ref
                offset = ref.last_offset + 1

    async def _measure(self, state: PartitionState) -> int:
        return sum([span.size async for span in self._spans(state, state.log_start_offset)])

    # --- fetch -------------------------------------------------------------------
    async def wait_for_data(self, timeout: float) -> None:
        async with self._data_arrived:
            try:
                await asyncio.wait_for(self._data_arrived.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def read(self, name: str, partition: int, offset: int, max_bytes: int,
                   first_batch_always: bool = True) -> FetchResult:
        """Batches from ``offset`` up to ``max_bytes``; the first batch is returned even if
        larger when ``first_batch_always`` (KIP-74), so consumers always make progress."""
        topic = await self.topic(name)
        if topic is None or not 0 <= partition < topic.partitions:
            return FetchResult(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        state = self.partitions.get((name, partition))
        if state is None or not self.writable():
            # A broker that cannot prove its session is current may have been fenced
            # and replaced: it must not answer with a high watermark that may be stale.
            return FetchResult(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        hwm, start = state.high_watermark, state.log_start_offset
        if offset < start or offset > hwm:
            return FetchResult(ErrorCode.OFFSET_OUT_OF_RANGE, hwm, start)
        if offset == hwm or max_bytes <= 0 and not first_batch_always:
            return FetchResult(ErrorCode.NONE, hwm, start)
        entries = state.tail_from(offset)
        if entries is None:
            entries = await self._read_stored(state, offset, max_bytes)
        out: list[bytes] = []
        size = 0
        for entry in entries:
            if entry.base_offset >= hwm:
                break
            if size + len(entry.batch) > max_bytes and (out or not first_batch_always):
                break
            out.append(entry.batch)
            size += len(entry.batch)
        METRICS.bytes_out.inc(size)
        return FetchResult(ErrorCode.NONE, hwm, start, b"".join(out))

    async def offset_for_time(self, name: str, partition: int, timestamp: int) -> tuple[int, int, int, int]:
        """ListOffsets: (error, offset, timestamp, leader epoch) for -1 latest, -2 earliest,
        -3 max timestamp, or the first record at or after ``timestamp``."""
        topic = await self.topic(name)
        if topic is None or not 0 <= partition < topic.partitions:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1, -1
        state = self.partitions.get((name, partition))
        if state is None or not self.writable():
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, -1, -1, -1
        epoch = state.lease.leader_epoch
        if timestamp == LATEST:
            return ErrorCode.NONE, state.high_watermark, -1, epoch
        if timestamp == EARLIEST:
            return ErrorCode.NONE, state.log_start_offset, -1, epoch
        if timestamp == MAX_TIMESTAMP:
            if state.high_watermark == state.log_start_offset or state.max_timestamp < 0:
                return ErrorCode.NONE, -1, -1, epoch
            timestamp = state.max_timestamp
        if timestamp < 0:
            return ErrorCode.INVALID_REQUEST, -1, -1, epoch
        found = await self._find_time(state, timestamp)
        if found is None:
            return ErrorCode.NONE, -1, -1, epoch
        return ErrorCode.NONE, found[0], found[1], epoch

    async def _find_time(self, state: PartitionState, timestamp: int) -> tuple[int, int] | None:
        """The first record at or after ``timestamp``, in offset order.

        Every record before the first ref whose max timestamp reaches
        ``timestamp`` is older, so only that ref's batches are read (from the
        tail when it still holds them): one read per lookup instead of one per
        ref since the log start.
        """
        start, hwm = state.log_start_offset, state.high_watermark
        async for ref in self._refs(state, start):
            if ref.max_timestamp < timestamp:
                continue
            for entry in await self._entries_of(state, ref):
                if entry.base_offset >= hwm:
                    return None
                if entry.last_offset < start or entry.max_timestamp < timestamp:
                    continue
                for record in decode_records(entry.batch):
                    if record.timestamp >= timestamp and record.offset >= start:
                        return record.offset, record.timestamp
        return None

    async def _entries_of(self, state: PartitionState, ref) -> list[BatchEntry]:
        """The batches of one ref, from the in-memory tail when it covers them (no GET)."""
        if state.tail and state.tail[0].base_offset <= ref.first_offset:
            return [e for e in state.tail if ref.first_offset <= e.base_offset <= ref.last_offset]
        return list(await self.reader.read(ref))

    async def _read_stored(self, state: PartitionState, offset: int, max_bytes: int) -> list[BatchEntry]:
        entries: list[BatchEntry] = []
        size = 0
        # Compacted tier segments have offset gaps (as in Kafka): when the refs holding
        # ``offset`` end without a batch at or after it, carry on after them.
        while not entries and offset < state.high_watermark:
            refs = [r for r in state.refs if r.last_offset >= offset]
            if not refs or refs[0].first_offset > offset:
                refs = await self.reader.locate(state.topic.topic_id, state.partition, offset) or refs
            if not refs:
                break
            for ref in refs:
                for entry in await self.reader.read(ref):
                    if entry.last_offset >= offset:
                        entries.append(entry)
                        size += len(entry.batch)
                if size >= max_bytes:
                    break
            offset = refs[-1].last_offset + 1
        return entries


async def _bounded_gather(coros: list, limit: int) -> None:
    """Run ``coros`` at most ``limit`` at a time; the first failure propagates once all have ended."""
    gate = asyncio.Semaphore(limit)

    async def run(coro) -> None:
        async with gate:
            await coro
    results = await asyncio.gather(*(run(c) for c in coros), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _consume_exception(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


LATEST, EARLIEST, MAX_TIMESTAMP = -1, -2, -3
