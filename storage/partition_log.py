"""The write side of a partition log: commits, checkpoints, and lease hand-over.

Commit protocol (one flush, any number of partitions):

1. PUT the ingest segment at ``ingest/<session>/<seq>.avro`` with
   If-None-Match, so a retry can never replace different bytes.
2. One metadata write with two items: a Check that our session is current
   and unfenced, and a create-only Put of ``log#<session>/<seq>``.  That is
   4 write units whatever the partition count.  The object is referenced only
   once this succeeds; producers are acknowledged only after that.
3. An unknown outcome is never guessed: we retry the same create-only Put
   (its condition makes retries idempotent), and if we must give up we write
   a *void* marker at the same key — whichever of the two lands first decides,
   and the loser's condition fails.

Checkpoints, every few seconds per broker, move per-partition state out of
memory: one index object listing the new byte ranges of every changed
partition, then one create-only item per changed partition (~1 write unit).

Recovery after a takeover reads the newest checkpoint, then the previous
owner's commit log after it, and the Avro header (a ranged GET) of each
object that log names.  Only committed objects are ever read, so nothing a
zombie wrote after being fenced is visible.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from . import keys
from .clock import Clock
from .conditions import ABSENT, Put, where
from .errors import Conflict, CorruptData, Fenced, Internal, Unavailable
from .index_objects import encode_index
from .leases import LeaseView, lease_is_free
from .model import Item, SegmentRef
from .ports import MetaStore, ObjectStore
from .producers import ProducerStates
from .retry import Backoff, put_once, with_retries
from .segments import BatchEntry, NeedMoreBytes, decode_segment_header, encode_ingest_segment
from .sessions import Session, view_of

HEADER_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FlushGroup:
    """One partition's batches in a flush, offsets already patched in."""

    topic: str
    topic_id: str
    partition: int
    entries: list[BatchEntry]


@dataclass(frozen=True, slots=True)
class Committed:
    seq: int
    object_key: str
    size: int
    refs: dict[tuple[str, int], SegmentRef]  # (topic_id, partition) -> where its batches landed


@dataclass(slots=True)
class PartitionLease:
    topic: str
    topic_id: str
    partition: int
    leader_epoch: int
    version: int
    log_start_offset: int


@dataclass(slots=True)
class RecoveredPartition:
    lease: PartitionLease
    next_offset: int
    max_timestamp: int
    producers: ProducerStates


@dataclass(slots=True)
class CheckpointInput:
    """A snapshot of one partition's committed state since its last checkpoint."""

    lease: PartitionLease
    start_offset: int
    end_offset: int
    max_timestamp: int
    refs: list[SegmentRef]
    producers: ProducerStates


@dataclass(slots=True)
class _Tail:
    next_offset: int
    max_timestamp: int
    refs: list[SegmentRef] = field(default_factory=list)


def state_item_of(lease: PartitionLease, owner_node: int | None, owner_epoch: int | None) -> Item:
    return Item(keys.LEASES_PK, keys.lease_sk(lease.topic_id, lease.partition), {
        "topic": lease.topic, "topic_id": lease.topic_id, "partition": lease.partition,
        "owner_node": owner_node, "owner_epoch": owner_epoch, "leader_epoch": lease.leader_epoch,
        "version": lease.version, "log_start_offset": lease.log_start_offset,
    })


def lease_view_of(item: Item | None) -> LeaseView:
    if item is None:
        return LeaseView(None, None, 0, 0)
    a = item.attrs
    return LeaseView(a.get("owner_node"), a.get("owner_epoch"), int(a.get("leader_epoch", 0)), int(a.get("version", 0)))


class LeaseHeld(Conflict):
    """The partition is led by a live broker; ask again after its session expires."""

    kafka_code = 6


class LogWriter:
    """All writes one broker session makes to partition logs."""

    def __init__(self, objects: ObjectStore, meta: MetaStore, session: Session, clock: Clock,
                 backoff: Backoff = Backoff()) -> None:
        self.objects = objects
        self.meta = meta
        self.session = session
        self.clock = clock
        self.backoff = backoff
        self.next_seq = 0
        self.headers = HeaderCache(objects)
        self._index_seq = 0
        self._in_flight = False

    # --- commits -------------------------------------------------------------
    async def commit(self, groups: Sequence[FlushGroup]) -> Committed:
        if self._in_flight:
            raise Internal("commits must be sequential", session=self.session.name)
        self._in_flight = True
        try:
            return await self._commit(groups)
        finally:
            self._in_flight = False

    async def _commit(self, groups: Sequence[FlushGroup]) -> Committed:
        seq = self.next_seq
        self.next_seq += 1  # never reuse a seq: its object key may already exist
        segment = encode_ingest_segment(
            [(g.topic, g.partition, g.entries) for g in groups],
            writer=self.session.name, seq=seq, created_ms=self.clock.now_ms())
        key = keys.ingest_object_key(self.session.name, seq)
        await self._put_object(key, segment.data)
        await self._commit_log_item(seq, key, len(segment.data), len(groups))
        by_name = {(g.topic, g.partition): g.topic_id for g in groups}
        refs = {}
        for s in segment.partitions:
            refs[(by_name[(s.topic, s.partition)], s.partition)] = SegmentRef(
                key, s.position, s.length, s.first_offset, s.last_offset, s.max_timestamp)
        return Committed(seq, key, len(segment.data), refs)

    async def _put_object(self, key: str, data: bytes) -> None:
        await put_once(self.objects, key, data, self.backoff)  # keys are unique to a session seq

    async def _commit_log_item(self, seq: int, object_key: str, size: int, partitions: int) -> None:
        item = Item(keys.commit_log_pk(self.session.name), keys.commit_log_sk(seq), {
            "object": object_key, "size": size, "partitions": partitions, "created_ms": self.clock.now_ms(),
        })
        ops = [self.session.check_op(), Put(item, ABSENT)]

        async def attempt() -> None:
            try:
                await self.meta.write(ops)
            except Conflict as exc:
                if exc.index == 1 and exc.current is not None and not exc.current.get("void"):
                    return  # our earlier, ambiguous attempt did commit
                if exc.index == 1:
                    raise Unavailable("commit was voided", seq=seq) from exc
                if await self._committed(seq):
                    return
                raise Fenced("session fenced; flush not committed", session=self.session.name, seq=seq) from exc
        try:
            await with_retries(attempt, self.backoff)
        except Unavailable:
            if await self._void_or_committed(item):
                return
            raise

    async def _committed(self, seq: int) -> bool:
        found = await self.meta.get(keys.commit_log_pk(self.session.name), keys.commit_log_sk(seq))
        return found is not None and not found.get("void")

    async def _void_or_committed(self, item: Item) -> bool:
        """Settle an unknown outcome for good: True if the commit exists, False once voided."""
        void = Item(item.pk, item.sk, {"void": True, "created_ms": self.clock.now_ms()})
        while True:
            try:
                await self.meta.write([Put(void, ABSENT)])
                return False
            except Conflict as exc:
                return exc.current is not None and not exc.current.get("void")
            except Unavailable:
                await asyncio.sleep(self.backoff.max_ms / 1000)

    # --- checkpoints -----------------------------------------------------------
    async def checkpoint(self, parts: Sequence[CheckpointInput]) -> None:
        """Persist each partition's committed tail.

        Call between commits, with snapshots of committed state: the items
        record ``next_seq`` as the first commit they do not cover.
        """
        if not parts:
            return
        if self._in_flight:
            raise Internal("checkpoint overlaps a commit", session=self.session.name)
        log_from = self.next_seq
        index_key = None
        with_refs = [p for p in parts if p.refs]
        if with_refs:
            index_key = keys.index_object_key(self.session.name, self._index_seq)
            self._index_seq += 1
            data = encode_index((p.lease.topic_id, p.lease.partition, r) for p in with_refs for r in p.refs)
            await self._put_object(index_key, data)

        async def write_one(part: CheckpointInput) -> None:
            item = checkpoint_item(part, self.session.name, log_from, index_key if part.refs else None)
            try:
                await with_retries(lambda: self.meta.write([Put(item, ABSENT)]), self.backoff)
            except Conflict:
                pass  # an identical checkpoint is already there
        await _bounded_gather([write_one(p) for p in parts], limit=32)

    # --- leases ------------------------------------------------------------------
    async def acquire(self, topic: str, topic_id: str, partition: int) -> RecoveredPartition:
        """Take a partition whose lease is free, recovering its committed tail.

        Raises `LeaseHeld` while another live session owns it.
        """
        state = await self.meta.get(keys.LEASES_PK, keys.lease_sk(topic_id, partition))
        view = lease_view_of(state)
        ours = view.owner_node == self.session.node_id and view.owner_epoch == self.session.epoch
        if view.owner_node is not None and not ours:
            owner = await self.meta.get(keys.BROKERS_PK, keys.broker_sk(int(view.owner_node)))
            owner_view = None if owner is None else view_of(owner)
            if not lease_is_free(view, owner_view):
                raise LeaseHeld("partition is held by a live broker", partition=f"{topic}-{partition}",
                                owner=view.owner_node)
        # A lease naming this very session while the caller does not lead the partition
        # is left over from an acquire whose reply was lost: take it again, with recovery.
        log_start = int(state.attrs.get("log_start_offset", 0)) if state else 0
        lease = PartitionLease(topic, topic_id, partition, view.leader_epoch + 1, view.version + 1, log_start)
        # After a graceful release the newest checkpoint is final (it was written with
        # the release), so the previous owner's later commits need not be scanned.
        recovered = await recover_tail(self.objects, self.meta, topic, topic_id, partition,
                                       scan_log=state is None or view.owner_node is not None, headers=self.headers)
        snapshot = CheckpointInput(lease, recovered.start_offset, recovered.next_offset, recovered.max_timestamp,
                                   recovered.refs, recovered.producers)
        index_key = None
        if recovered.refs:
            index_key = keys.index_object_key(self.session.name, self._index_seq)
            self._index_seq += 1
            await self._put_object(index_key, encode_index((topic_id, partition, r) for r in recovered.refs))
        condition = ABSENT if state is None else where(version=view.version)
        leased = state_item_of(lease, self.session.node_id, self.session.epoch)
        ops = [self.session.check_op(), Put(leased, condition),
               Put(checkpoint_item(snapshot, self.session.name, self.next_seq, index_key), ABSENT)]
        try:
            await with_retries(lambda: self.meta.write(ops), self.backoff)
        except Conflict as exc:
            if exc.index == 0:
                raise Fenced("session fenced while acquiring", session=self.session.name) from exc
            if not (exc.index == 1 and _same_item(exc.current, leased)):  # else: ours landed, reply lost
                raise LeaseHeld("lost the race for a partition", partition=f"{topic}-{partition}",
                                current=exc.current) from exc
        return RecoveredPartition(lease, recovered.next_offset, recovered.max_timestamp, recovered.producers)

    async def release(self, final: CheckpointInput, *, checkpointed: bool = False) -> None:
        """Hand a partition over gracefully: checkpoint it, then clear the owner in one write.

        ``checkpointed`` says a checkpoint of exactly ``final`` was just written
        (a broker's shutdown checkpoints every partition in one index object
        first), so only the owner is cleared.
        """
        lease = final.lease
        index_key = None
        if final.refs and not checkpointed:
            index_key = keys.index_object_key(self.session.name, self._index_seq)
            self._index_seq += 1
            await self._put_object(index_key, encode_index((lease.topic_id, lease.partition, r) for r in final.refs))
        released = PartitionLease(lease.topic, lease.topic_id, lease.partition, lease.leader_epoch,
                                  lease.version + 1, lease.log_start_offset)
        freed = state_item_of(released, None, None)
        ops = [self.session.check_op(), Put(freed, where(version=lease.version)),
               Put(checkpoint_item(final, self.session.name, self.next_seq, index_key), ABSENT)]
        if checkpointed:
            ops = ops[:2]
        try:
            try:
                await with_retries(lambda: self.meta.write(ops), self.backoff)
            except Conflict as exc:
                if exc.index != 2:
                    raise
                # The checkpoint key (end offset, leader epoch, commit seq) is already
                # taken, and only this session can have written it with nothing
                # committed since: the final state is already checkpointed (the usual
                # case right after a forced checkpoint at shutdown).
                await with_retries(lambda: self.meta.write(ops[:2]), self.backoff)
        except Conflict as exc:
            if exc.index == 1 and _same_item(exc.current, freed):
                return  # an earlier attempt of ours released it; only its reply was lost
            raise Fenced("lease lost before release", partition=f"{lease.topic}-{lease.partition}") from exc

    async def set_log_start(self, lease: PartitionLease, log_start_offset: int) -> None:
        """Advance the log start offset (retention, DeleteRecords), fenced by the lease version."""
        updated = PartitionLease(lease.topic, lease.topic_id, lease.partition, lease.leader_epoch,
                                 lease.version + 1, log_start_offset)
        item = state_item_of(updated, self.session.node_id, self.session.epoch)
        ops = [self.session.check_op(), Put(item, where(version=lease.version))]
        try:
            await with_retries(lambda: self.meta.write(ops), self.backoff)
        except Conflict as exc:
            if not (exc.index == 1 and _same_item(exc.current, item)):  # else: ours landed, reply lost
                raise Fenced("lease lost", partition=f"{lease.topic}-{lease.partition}") from exc
        lease.version = updated.version
        lease.log_start_offset = log_start_offset


def _same_item(current: Item | None, written: Item) -> bool:
    """Whether the store holds exactly what we tried to write.  A lease item carries a
    version only the write conditioned on the previous version can produce, plus our
    session, so equality proves our own write landed."""
    return current is not None and current.attrs == written.attrs


def checkpoint_item(part: CheckpointInput, session: str, log_from: int, index_key: str | None) -> Item:
    lease = part.lease
    return Item(keys.partition_pk(lease.topic_id, lease.partition),
                keys.checkpoint_sk(part.end_offset, lease.leader_epoch, log_from), {
                    "start": part.start_offset, "end": part.end_offset, "session": session,
                    "log_from": log_from, "index": index_key, "max_ts": part.max_timestamp,
                    "producers": part.producers.to_json(),
                })


@dataclass(slots=True)
class RecoveredTail:
    start_offset: int
    next_offset: int
    max_timestamp: int
    refs: list[SegmentRef]
    producers: ProducerStates


async def latest_checkpoint(meta: MetaStore, topic_id: str, partition: int) -> Item | None:
    found = await meta.query(keys.partition_pk(topic_id, partition), prefix=keys.CHECKPOINT_PREFIX,
                             reverse=True, limit=1)
    return found[0] if found else None


async def read_header(objects: ObjectStore, key: str, decode=None):
    """An Avro object's header from a ranged GET of its first bytes, fetching more
    once if the header is larger than the probe (ingest headers by default)."""
    decode = decode or decode_segment_header
    probe = HEADER_PROBE_BYTES
    while True:
        data = await objects.get(key, 0, probe)
        try:
            return decode(data)
        except NeedMoreBytes as more:
            if more.needed <= len(data) or len(data) < probe:
                raise CorruptData("object header is truncated", key=key) from more
            probe = more.needed



class HeaderCache:
    """Ingest object headers, indexed by partition, for recovery.

    Taking over a dead session's partitions replays the same commit log once
    per partition.  Shared by those recoveries, the cache reads each object
    once for all of them (bench_commit, 1,000 partitions x 250 objects:
    500 GETs instead of 500,000) and finds a partition's summary without a
    scan of the header.  Objects never change, so entries never go stale; the
    least recently used are dropped beyond ``max_summaries`` partition
    summaries in all (about 200 bytes each).
    """

    def __init__(self, objects: ObjectStore, max_summaries: int = 250_000) -> None:
        self._objects = objects
        self._max_summaries = max_summaries
        self._held = 0
        self._entries: OrderedDict[str, dict] = OrderedDict()

    async def summaries(self, key: str) -> dict:
        """(topic, partition) -> that partition's summary in the object ``key``."""
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        header = await read_header(self._objects, key)
        found = {(s.topic, s.partition): s for s in header.partitions}
        self._entries[key] = found
        self._held += len(found)
        while self._held > self._max_summaries and len(self._entries) > 1:
            self._held -= len(self._entries.popitem(last=False)[1])
        return found


async def recover_tail(objects: ObjectStore, meta: MetaStore, topic: str, topic_id: str,
                       partition: int, *, scan_log: bool = True, headers: HeaderCache | None = None) -> RecoveredTail:
    """Rebuild a partition's committed state from its newest checkpoint plus the commit log after it.

    ``scan_log=False`` trusts the newest checkpoint to be final: a graceful
    release writes it in the same transaction that clears the owner.
    """
    checkpoint = await latest_checkpoint(meta, topic_id, partition)
    if checkpoint is None:
        return RecoveredTail(0, 0, -1, [], ProducerStates())
    a = checkpoint.attrs
    end = int(a["end"])
    tail = RecoveredTail(end, end, int(a.get("max_ts", -1)), [], ProducerStates.from_json(a.get("producers")))
    if not scan_log:
        return tail
    log_from = int(a["log_from"])
    if headers is None:
        headers = HeaderCache(objects)
    entries = await meta.query(keys.commit_log_pk(str(a["session"])),
                               after=keys.commit_log_sk(log_from - 1) if log_from > 0 else None)
    for entry in entries:
        if entry.get("void"):
            continue
        s = (await headers.summaries(str(entry.attrs["object"]))).get((topic, partition))
        if s is not None and s.last_offset >= tail.next_offset:
            tail.refs.append(SegmentRef(str(entry.attrs["object"]), s.position, s.length,
                                        s.first_offset, s.last_offset, s.max_timestamp))
            tail.next_offset = s.last_offset + 1
            tail.max_timestamp = max(tail.max_timestamp, s.max_timestamp)
            for pid, epoch, first_seq, last_seq, base, last in s.producers:
                tail.producers.append(pid, epoch, first_seq, last_seq, base, last, s.max_timestamp)
    return tail


async def _bounded_gather(coros: list, limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def run(coro) -> None:
        async with gate:
            await coro
    await asyncio.gather(*(run(c) for c in coros))


@dataclass(frozen=True, slots=True)
class LeaseRow:
    topic: str
    topic_id: str
    partition: int
    owner_node: int | None
    owner_epoch: int | None
    leader_epoch: int


async def list_leases(meta: MetaStore) -> list[LeaseRow]:
    """Every partition lease in one Query (they share a partition key)."""
    rows = []
    for item in await meta.query(keys.LEASES_PK):
        a = item.attrs
        rows.append(LeaseRow(str(a["topic"]), str(a["topic_id"]), int(a["partition"]), a.get("owner_node"),
                             a.get("owner_epoch"), int(a.get("leader_epoch", 0))))
    return rows
