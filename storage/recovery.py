"""Rebuilding the metadata store from the bucket alone (disaster recovery).

When the primary region is gone and the metadata table with it, a replica
bucket still holds self-describing objects: ingest objects name every
partition's topic, offsets, byte range and producers in their header; tier
segments name their topic, topic id and offset range in their key and
header.  `recover` reads them all, lets `recovery_plan` decide which ranges
form each partition's log, and writes a fresh table that `tidelog serve`
can run on as if nothing had happened.

What is written, in an order that makes a crash of the recovery harmless
(brokers act only on topics in the catalog, and topics go last):

1. a ``counters``/``recovery`` marker, create-only, so a second recovery
   into the same table refuses instead of mixing two views;
2. per partition: tier items and the tier head (the tiered range),
   index objects (``index/<recovery session>/…``) plus checkpoint items for
   the surviving ingest ranges, a final checkpoint holding the end offset
   and producer state, and a released lease carrying the highest leader
   epoch seen, so the next leader's epoch is above every batch stored;
3. commit-log items for every ingest object that contributes a range, so
   orphan GC (`gc`) treats exactly the unused objects as garbage;
4. one fenced, dead session item per node id seen in object keys, at the
   highest session epoch seen: a new broker's session epoch, and so every
   object key it writes, can never collide with an old one;
5. the producer-id counter above every producer id stored;
6. the topics (new ids unless tier segment keys carry the old one), with
   time and size retention switched off so nothing recovered is deleted
   before an operator restores the real topic configs.

What the bucket cannot tell, and is therefore lost: topic configs,
partitions that never held data beyond the highest seen, consumer group
offsets, and whatever replication had not copied yet (reported as holes).

Cost: one LIST page per 1000 objects, one GET of every ingest object (whole:
the batches carry the leader epochs and their CRCs are checked), one ranged
GET per tier header plus one whole GET per tier segment kept, one PUT per
index object, and about one write unit per item written.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote

import crc32c

from . import keys
from .catalog import Topic
from .clock import Clock
from .conditions import ABSENT, Put
from .errors import Conflict, CorruptData, InvalidRequest, NotFound
from .index_objects import encode_index
from .model import Item
from .partition_log import CheckpointInput, PartitionLease, checkpoint_item, read_header, state_item_of
from .ports import MetaStore, ObjectStore
from .producers import ProducerStates
from .recovery_plan import IngestRange, PartitionPlan, Rejected, TierRange, leader_epoch_of, plan_recovery, topic_ids
from .segments import SYNC_SIZE, decode_ingest_segment, decode_tier_header, decode_tier_segment
from .tier_codec import Chunk, record_size, scan_blocks
from .tier_items import TierHead, TierSegment

T = TypeVar("T")
R = TypeVar("R")

RECOVERY_SK = "recovery"
#: Configs every recovered topic gets: keep everything until an operator says otherwise.
RECOVERED_CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1"}
#: Refs per index object: keeps each small enough for a reader's index cache.
REFS_PER_INDEX = 1000
#: Tier chunks are cut at about this many stored bytes (whole Avro blocks).
TIER_CHUNK_BYTES = 4 * 1024 * 1024

_TIER_KEY = re.compile(
    r"^tier/topic=(?P<topic>[^/]+)/partition=(?P<partition>\d+)/"
    r"(?P<start>\d{20})-(?P<end>\d{20})-(?P<topic_id>.+)-(?P<digest>[0-9a-f]+)\.avro$")
_SESSION = re.compile(r"^(?P<node>\d+)-(?P<epoch>\d+)$")


@dataclass(frozen=True, slots=True)
class TierKey:
    topic: str
    partition: int
    topic_id: str
    start: int
    end: int  # exclusive
    digest: str


def parse_tier_key(key: str) -> TierKey | None:
    """The facts a tier segment's key encodes, or None for a key tidelog did not write."""
    m = _TIER_KEY.match(key)
    if m is None:
        return None
    parsed = TierKey(unquote(m["topic"]), int(m["partition"]), m["topic_id"], int(m["start"]), int(m["end"]),
                     m["digest"])
    if parsed.start >= parsed.end or keys.tier_object_key(
            parsed.topic, parsed.partition, parsed.topic_id, parsed.start, parsed.end, parsed.digest) != key:
        return None
    return parsed


def parse_session(session: str) -> tuple[int, int] | None:
    """(node id, session epoch) of a session name written by `keys.session_name`."""
    m = _SESSION.match(session)
    return None if m is None else (int(m["node"]), int(m["epoch"]))


@dataclass(slots=True)
class Scan:
    """Everything read from the bucket, before any decision."""

    ingest: list[IngestRange] = field(default_factory=list)
    tier: list[TierRange] = field(default_factory=list)
    object_partitions: dict[str, int] = field(default_factory=dict)  # ingest key -> partitions in it
    sessions: dict[int, int] = field(default_factory=dict)  # node id -> highest session epoch seen
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    objects: int = 0
    bytes_read: int = 0
    max_producer_id: int = -1


@dataclass(slots=True)
class RecoveryReport:
    session: str
    topics: dict[str, int]  # name -> partition count
    partitions: list[PartitionPlan]
    scan: Scan
    items_written: int = 0
    index_objects: int = 0

    @property
    def rejected(self) -> list[Rejected]:
        return [r for p in self.partitions for r in p.rejected]

    @property
    def holes(self) -> list[tuple[str, int, int, int]]:
        return [(p.topic, p.partition, a, b) for p in self.partitions for a, b in p.holes]

    def to_json(self) -> dict:
        return {
            "session": self.session,
            "topics": self.topics,
            "partitions": [{
                "topic": p.topic, "partition": p.partition, "log_start_offset": p.log_start_offset,
                "next_offset": p.next_offset, "leader_epoch": p.max_leader_epoch,
                "ingest_ranges": len(p.ingest), "tier_segments": len(p.tier),
                "holes": [list(h) for h in p.holes],
            } for p in self.partitions],
            "rejected": [{"object": r.object_key, "topic": r.topic, "partition": r.partition,
                          "first_offset": r.first_offset, "last_offset": r.last_offset,
                          "leader_epoch": r.leader_epoch, "reason": r.reason} for r in self.rejected],
            "corrupt": [{"object": k, "error": e} for k, e in self.scan.corrupt],
            "foreign_objects": len(self.scan.foreign),
            "vanished_objects": len(self.scan.vanished),
            "objects_read": self.scan.objects,
            "bytes_read": self.scan.bytes_read,
            "items_written": self.items_written,
            "index_objects": self.index_objects,
        }


# --------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------


async def scan_bucket(objects: ObjectStore, *, concurrency: int = 16) -> Scan:
    scan = Scan()
    ingest_keys: list[str] = []
    async for info in objects.list(keys.INGEST_ROOT):
        ingest_keys.append(info.key)
    async for info in objects.list(keys.INDEX_ROOT):
        _note_session(scan, info.key)
    tier_infos = [info async for info in objects.list(keys.TIER_ROOT)]

    async def read_ingest(key: str) -> None:
        session = keys.session_of_object(key)
        if session is None or parse_session(session) is None:
            scan.foreign.append(key)
            return
        _note_session(scan, key)
        try:
            data = await objects.get(key)
        except NotFound:
            scan.vanished.append(key)  # deleted since the listing (a replicated GC delete)
            return
        scan.objects += 1
        scan.bytes_read += len(data)
        try:
            found = await asyncio.to_thread(_ingest_ranges, key, data)
        except CorruptData as exc:
            scan.corrupt.append((key, str(exc)))
            return
        scan.ingest.extend(found)
        scan.object_partitions[key] = len(found)
        for r in found:
            for producer in r.summary.producers:
                scan.max_producer_id = max(scan.max_producer_id, producer.producer_id)

    async def read_tier(info) -> None:
        parsed = parse_tier_key(info.key)
        if parsed is None:
            scan.foreign.append(info.key)
            return
        try:
            header = await read_header(objects, info.key, decode_tier_header)
        except CorruptData as exc:
            scan.corrupt.append((info.key, str(exc)))
            return
        except NotFound:
            scan.vanished.append(info.key)
            return
        scan.objects += 1
        if (header.topic, header.partition) != (parsed.topic, parsed.partition) or not (
                parsed.start <= header.first_offset <= header.last_offset < parsed.end):
            scan.corrupt.append((info.key, "tier header does not match its key"))
            return
        scan.tier.append(TierRange(info.key, info.size, info.last_modified_ms, parsed.topic, parsed.topic_id,
                                   parsed.partition, parsed.start, parsed.end - 1, header.max_timestamp,
                                   header.record_count))

    await map_bounded(ingest_keys, read_ingest, concurrency)
    await map_bounded(tier_infos, read_tier, concurrency)
    scan.ingest.sort(key=lambda r: (r.topic, r.partition, r.first_offset, r.rank))
    scan.tier.sort(key=lambda t: (t.topic, t.partition, t.first_offset))
    return scan


def _note_session(scan: Scan, key: str) -> None:
    session = keys.session_of_object(key)
    parsed = None if session is None else parse_session(session)
    if parsed is not None:
        node, epoch = parsed
        scan.sessions[node] = max(scan.sessions.get(node, 0), epoch)


def _ingest_ranges(key: str, data: bytes) -> list[IngestRange]:
    """Decode a whole ingest object (every CRC checked) into one range per partition."""
    header, rows = decode_ingest_segment(data)
    if keys.ingest_object_key(header.writer, header.seq) != key:
        raise CorruptData("ingest header names another object", key=key, writer=header.writer, seq=header.seq)
    by_partition: dict[tuple[str, int], list] = {}
    for topic, partition, entry in rows:
        by_partition.setdefault((topic, partition), []).append(entry)
    out = []
    for s in header.partitions:
        epoch = leader_epoch_of(by_partition[(s.topic, s.partition)], object_key=key, topic=s.topic,
                                partition=s.partition)
        out.append(IngestRange(key, len(data), header.seq, header.created_ms, epoch, s))
    return out




async def tier_segment(objects: ObjectStore, t: TierRange, topic_id: str, now_ms: int) -> TierSegment:
    """Rebuild a tier item from its object: the chunk table is cut anew on whole Avro blocks."""
    data = await objects.get(t.object_key)
    return await asyncio.to_thread(_tier_segment_of, data, t, topic_id, now_ms)


def _tier_segment_of(data: bytes, t: TierRange, topic_id: str, now_ms: int) -> TierSegment:
    header, records = decode_tier_segment(data)
    _, blocks = scan_blocks(data)
    if sum(count for _, _, count in blocks) != len(records):
        raise CorruptData("tier blocks do not hold every record", key=t.object_key)
    chunks: list[Chunk] = []
    index = 0
    run: list[tuple[int, int, int]] = []
    for i, block in enumerate(blocks):
        run.append(block)
        if sum(length for _, length, _ in run) >= TIER_CHUNK_BYTES or i == len(blocks) - 1:
            count = sum(c for _, _, c in run)
            start, end = run[0][0], run[-1][0] + run[-1][1]
            inside = records[index:index + count]
            chunks.append(Chunk(inside[0].offset, start, end - start, _crc(data, start, end),
                                max(r.timestamp for r in inside)))
            index += count
            run = []
    if any(len(data) < c.position + c.length or c.length <= SYNC_SIZE for c in chunks):
        raise CorruptData("tier chunk table does not fit the object", key=t.object_key)
    return TierSegment(
        topic_id=topic_id, partition=t.partition, start=t.first_offset, end=t.last_offset + 1,
        object_key=t.object_key, size=len(data), max_timestamp=header.max_timestamp,
        record_count=header.record_count, tombstones=sum(1 for r in records if r.value is None),
        raw_bytes=sum(record_size(r) for r in records), codec=header.codec, chunks=tuple(chunks),
        gen=0, created_ms=now_ms)


def _crc(data: bytes, start: int, end: int) -> int:
    with memoryview(data) as view:
        return crc32c.crc32c(view[start:end])


# --------------------------------------------------------------------------
# Writing the new table
# --------------------------------------------------------------------------


async def recover(objects: ObjectStore, meta: MetaStore, clock: Clock, *, concurrency: int = 16,
                  refs_per_index: int = REFS_PER_INDEX,
                  progress: Callable[[str], None] = lambda message: None) -> RecoveryReport:
    """Scan the bucket and rebuild every topic's metadata into ``meta``, which must be empty."""
    await _require_empty(meta)
    now = clock.now_ms()
    session = f"recovery-{now}"
    progress("scanning objects")
    scan = await scan_bucket(objects, concurrency=concurrency)
    progress(f"read {scan.objects} objects ({scan.bytes_read} bytes); planning")
    plans = plan_recovery(scan.ingest, scan.tier)
    ids = topic_ids(scan.tier)
    partitions: dict[str, int] = {}
    for topic, partition in plans:
        partitions[topic] = max(partitions.get(topic, 0), partition + 1)
    topics = {name: Topic(name, ids.get(name) or str(uuid.uuid4()), count, dict(RECOVERED_CONFIGS))
              for name, count in partitions.items()}
    report = RecoveryReport(session, partitions, list(plans.values()), scan)

    marker = Item(keys.COUNTERS_PK, RECOVERY_SK, {"session": session, "started_ms": now, "done": False})
    try:
        await meta.write([Put(marker, ABSENT)])
    except Conflict as exc:
        raise InvalidRequest("this table already received a recovery; recover into a new, empty table") from exc

    writer = _Writer(objects, meta, session, refs_per_index)
    progress(f"writing metadata for {len(plans)} partitions")

    async def write_partition(plan: PartitionPlan) -> None:
        await writer.partition(topics[plan.topic], plan, now, concurrency)
    await map_bounded(list(plans.values()), write_partition, max(1, concurrency // 4))
    await writer.put(_commit_log_items(plans.values(), scan, now))
    await writer.put(_session_items(scan.sessions, now))
    if scan.max_producer_id >= 0:
        await writer.put([Item(keys.COUNTERS_PK, keys.PRODUCER_ID_SK, {"next": scan.max_producer_id + 1})])
    for topic in topics.values():
        await meta.write([Put(topic.to_item(), ABSENT)])
        writer.items += 1
    await meta.write([Put(Item(marker.pk, marker.sk, {**marker.attrs, "done": True}), None)])
    report.items_written = writer.items + 2
    report.index_objects = writer.index_objects
    return report


async def _require_empty(meta: MetaStore) -> None:
    await meta.ensure(create=True)
    if await meta.get(keys.COUNTERS_PK, RECOVERY_SK) is not None:
        raise InvalidRequest("this table already received a recovery; recover into a new, empty table")
    for pk in (keys.TOPICS_PK, keys.LEASES_PK, keys.BROKERS_PK):
        if await meta.query(pk, limit=1):
            raise InvalidRequest("the table is not empty; recover into a new table", partition_key=pk)


def _commit_log_items(plans: Iterable[PartitionPlan], scan: Scan, now_ms: int) -> list[Item]:
    used: dict[str, IngestRange] = {}
    for plan in plans:
        for r in plan.ingest:
            used.setdefault(r.object_key, r)
    items = []
    for key, r in sorted(used.items()):
        session = keys.session_of_object(key)
        assert session is not None  # scan_bucket kept only keys with a session
        items.append(Item(keys.commit_log_pk(session), keys.commit_log_sk(r.seq), {
            "object": key, "size": r.object_size, "partitions": scan.object_partitions[key],
            "created_ms": r.created_ms, "recovered_ms": now_ms,
        }))
    return items


def _session_items(sessions: dict[int, int], now_ms: int) -> list[Item]:
    return [Item(keys.BROKERS_PK, keys.broker_sk(node), {
        "node_id": node, "host": "", "port": 0, "rack": None, "epoch": epoch, "heartbeat": 0,
        "fenced": True, "alive": False, "started_ms": now_ms,
    }) for node, epoch in sorted(sessions.items())]


class _Writer:
    def __init__(self, objects: ObjectStore, meta: MetaStore, session: str, refs_per_index: int) -> None:
        self.objects = objects
        self.meta = meta
        self.session = session
        self.refs_per_index = refs_per_index
        self.items = 0
        self.index_objects = 0
        self._index_seq = 0

    async def put(self, items: Sequence[Item]) -> None:
        if items:
            await self.meta.put_many(items)
            self.items += len(items)

    async def partition(self, topic: Topic, plan: PartitionPlan, now_ms: int, concurrency: int) -> None:
        lease = PartitionLease(topic.name, topic.topic_id, plan.partition, plan.max_leader_epoch, 0,
                               plan.log_start_offset)
        items: list[Item] = []
        if plan.tier:
            segments = await map_bounded(plan.tier, lambda t: tier_segment(self.objects, t, topic.topic_id, now_ms),
                                         max(1, concurrency // 4))
            items += [s.to_item() for s in segments]
            items.append(TierHead(topic.topic_id, plan.partition, plan.tier[-1].last_offset + 1, 1).to_item())
        refs = [r.ref() for r in plan.ingest]
        chunks = [refs[i:i + self.refs_per_index] for i in range(0, len(refs), self.refs_per_index)]
        for n, chunk in enumerate(chunks):
            index_key = keys.index_object_key(self.session, self._next_index())
            await self.objects.put_if_absent(index_key, encode_index((topic.topic_id, plan.partition, r) for r in chunk))
            self.index_objects += 1
            last = n == len(chunks) - 1
            end = plan.next_offset if last else chunk[-1].last_offset + 1
            max_ts = plan.max_timestamp if last else max(r.max_timestamp for r in chunk)
            snapshot = CheckpointInput(lease, chunk[0].first_offset, end, max_ts, chunk,
                                       plan.producers if last else ProducerStates())
            items.append(checkpoint_item(snapshot, self.session, 0, index_key))
        if not chunks:  # tier segments only: the newest checkpoint still carries the end offset
            snapshot = CheckpointInput(lease, plan.next_offset, plan.next_offset, plan.max_timestamp, [],
                                       plan.producers)
            items.append(checkpoint_item(snapshot, self.session, 0, None))
        items.append(state_item_of(lease, None, None))
        await self.put(items)

    def _next_index(self) -> int:
        seq = self._index_seq
        self._index_seq += 1
        return seq


async def map_bounded(items: Sequence[T], fn: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """``[await fn(x) for x in items]`` with at most ``limit`` running at once, results in order.

    Workers pull from a shared cursor, so a million items cost ``limit``
    tasks, not a million.  The first failure cancels the rest and propagates.
    """
    results: list = [None] * len(items)
    cursor = iter(range(len(items)))

    async def worker() -> None:
        for i in cursor:
            results[i] = await fn(items[i])
    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(limit, len(items)))):
            group.create_task(worker())
    return results


async def require_bucket(objects: ObjectStore) -> None:
    """Fail early with a clear message when the bucket is missing."""
    try:
        await objects.ensure(create=False)
    except NotFound as exc:
        raise NotFound("bucket to recover from does not exist") from exc
