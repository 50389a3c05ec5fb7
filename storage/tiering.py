"""Tiering: merge a partition's small checkpointed ingest ranges into large
record-level tier segments, then swap the index with one conditional write.

Per partition and round:

1. Read the tier head (how far the partition is tiered), the log start and
   the newest checkpoint.  Only ``[max(head, log start), newest.end)`` may
   be tiered: everything after the newest checkpoint lives only with the
   leader (its memory and commit log).
2. Walk the checkpoints' index objects to build a contiguous chain of ingest
   ranges from there, up to the target size (``segment.bytes`` may lower
   it).  Less than a full segment is tiered only once the partition has
   been waiting ``max_wait_ms`` (remembered in the head), so quiet
   partitions do not make a tiny object per round.
3. Fetch the ranges (ranged GETs, a few in flight), decode the batches,
   re-encode the records as one Avro tier object in a worker thread, and
   PUT it create-only under a content-addressed key.
4. **Swap** in one metadata write: bump the head (conditioned on the version
   read in 1, so of two racing tierers exactly one wins) and create the
   tier item.  Then delete the checkpoint items it fully covers, except the
   newest, with plain single-item deletes: readers consult tier items first,
   so from the swap on each offset resolves to the tier segment, and a
   checkpoint still there only holds the same records.

The loser of a race, or a round that took longer than ``max_commit_delay_ms``
between its PUT and its swap, abandons its object: nothing references it
and the sweeper deletes it once it is older than its minimum age, which
must exceed that delay.  Checkpoint-covered ingest objects are never
deleted here; once unreferenced, the sweeper removes them after its grace
period, so a reader that located them a moment ago can still read them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from . import keys
from .catalog import Topic
from .clock import Clock, make_random
from .conditions import ABSENT, Put, where
from .errors import Conflict, InvalidRequest
from .model import SegmentRef
from .ports import MetaStore, ObjectStore
from .records import Record, decode_records
from .retry import put_once, with_retries
from .segments import TIER_CODECS, BatchEntry, decode_partition_blocks
from .tier_codec import DEFAULT_CHUNK_BYTES, EncodedTier, encode_tier
from .tier_items import TierHead, TierSegment, checkpoint_end
from .tier_state import IndexCache, PartitionView, bounded_map, checkpoints, delete_items, load_partition

log = logging.getLogger("tidelog.tiering")

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TierPolicy:
    target_bytes: int = 64 * MIB
    codec: str = "zstandard"
    max_wait_ms: int = 10 * 60_000
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    #: A swap attempted later than this after its PUT is abandoned; the
    #: sweeper's minimum object age must be larger (see `sweeper`).
    max_commit_delay_ms: int = 10 * 60_000
    read_concurrency: int = 8

    def __post_init__(self) -> None:
        if self.codec not in TIER_CODECS:
            raise InvalidRequest("unsupported tier codec", codec=self.codec)
        if self.target_bytes <= 0 or self.chunk_bytes <= 0 or self.max_wait_ms < 0 or self.read_concurrency <= 0:
            raise InvalidRequest("tier policy values must be positive", policy=repr(self))

    def target_for(self, topic: Topic) -> int:
        configured = topic.config_int("segment.bytes")
        return min(self.target_bytes, configured) if configured > 0 else self.target_bytes


@dataclass(slots=True)
class TierResult:
    topic: str
    partition: int
    segments: int = 0
    records: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    checkpoints_deleted: int = 0
    state: str = "idle"  # idle | waiting | tiered | lost-race | gap | too-slow
    objects: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------
# Pure planning
# --------------------------------------------------------------------------


def extend_chain(candidates: Iterable[SegmentRef], cursor: int, end: int) -> list[SegmentRef]:
    """The refs that continue the log contiguously from ``cursor`` (exclusive ``end``).

    Overlapping duplicates (the same range listed by two checkpoints) are
    skipped; the chain stops at the first hole.
    """
    chain = []
    for ref in sorted(candidates, key=lambda r: (r.first_offset, r.last_offset)):
        if ref.last_offset < cursor or cursor >= end:
            continue
        if ref.first_offset > cursor:
            break
        chain.append(ref)
        cursor = ref.last_offset + 1
    return chain


def cut(chain: Sequence[SegmentRef], target_bytes: int) -> list[SegmentRef]:
    """The shortest prefix of ``chain`` holding at least ``target_bytes`` (all of it if smaller)."""
    total = 0
    for i, ref in enumerate(chain):
        total += ref.length
        if total >= target_bytes:
            return list(chain[: i + 1])
    return list(chain)


def records_in(batches: Iterable[Sequence[BatchEntry]], start: int, end: int) -> Iterator[Record]:
    """Every record with ``start <= offset < end``, in offset order."""
    for entries in batches:
        for entry in entries:
            if entry.last_offset < start or entry.base_offset >= end:
                continue
            for record in decode_records(entry.batch):
                if start <= record.offset < end:
                    yield record


# --------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------


class Tierer:
    def __init__(self, objects: ObjectStore, meta: MetaStore, clock: Clock, policy: TierPolicy = TierPolicy(),
                 index_cache: IndexCache | None = None, rng: random.Random | None = None) -> None:
        self.objects = objects
        self.meta = meta
        self.clock = clock
        self.policy = policy
        self.indexes = index_cache or IndexCache(objects)
        self.rng = rng or make_random()

    async def tier_partition(self, topic: Topic, partition: int, *, max_segments: int | None = None) -> TierResult:
        """Tier as many segments as policy allows (or ``max_segments``); safe to run concurrently."""
        result = TierResult(topic.name, partition)
        view = await load_partition(self.meta, topic.topic_id, partition)
        result.checkpoints_deleted += await self._drop_covered(view, view.head.end)
        state = "idle"
        while max_segments is None or result.segments < max_segments:
            state = await self._tier_one(topic, view, result)
            if state != "tiered":
                break
            view = await load_partition(self.meta, topic.topic_id, partition)
        quiet = state in ("idle", "waiting", "tiered")
        result.state = "tiered" if result.segments and quiet else state
        return result

    async def _tier_one(self, topic: Topic, view: PartitionView, result: TierResult) -> str:
        start = max(view.head.end, view.log_start)
        limit = view.checkpointed_end
        if start >= limit:
            return "idle"
        target = self.policy.target_for(topic)
        chain = await self._chain(view, start, limit, target)
        if not chain:
            log.warning("checkpointed range has a hole; not tiering past it",
                        extra={"topic": topic.name, "partition": view.partition, "offset": start})
            return "gap"
        taken = cut(chain, target)
        full = sum(r.length for r in taken) >= target
        if not full and chain[-1].last_offset + 1 < limit:
            log.warning("checkpointed range has a hole; not tiering past it",
                        extra={"topic": topic.name, "partition": view.partition,
                               "offset": chain[-1].last_offset + 1})
            return "gap"
        if not full and not await self._waited_enough(view):
            return "waiting"
        end = taken[-1].last_offset + 1
        encoded, bytes_in = await self._encode(topic, view.partition, taken, start, end)
        segment = TierSegment(
            topic_id=topic.topic_id, partition=view.partition, start=start, end=end,
            object_key=keys.tier_object_key(topic.name, view.partition, topic.topic_id, start, end, encoded.digest),
            size=len(encoded.data), max_timestamp=encoded.max_timestamp, record_count=encoded.record_count,
            tombstones=encoded.tombstones, raw_bytes=encoded.raw_bytes, codec=self.policy.codec,
            chunks=encoded.chunks, gen=0, created_ms=self.clock.now_ms(), writer=f"{self.rng.getrandbits(64):016x}")
        put_at = self.clock.monotonic_ms()
        await self._put(segment.object_key, encoded.data)
        if self.clock.monotonic_ms() - put_at > self.policy.max_commit_delay_ms:
            log.warning("tier object took too long to commit; abandoning it",
                        extra={"topic": topic.name, "partition": view.partition, "object": segment.object_key})
            return "too-slow"
        deleted = await self._swap(view, segment)
        if deleted is None:
            return "lost-race"
        result.segments += 1
        result.records += encoded.record_count
        result.bytes_in += bytes_in
        result.bytes_out += len(encoded.data)
        result.objects.append(segment.object_key)
        result.checkpoints_deleted += deleted
        return "tiered"

    async def _chain(self, view: PartitionView, start: int, limit: int, target: int) -> list[SegmentRef]:
        chain: list[SegmentRef] = []
        cursor, total = start, 0
        while cursor < limit and total < target:
            page = await checkpoints(self.meta, view.topic_id, view.partition, ending_after=cursor, limit=32)
            candidates: list[SegmentRef] = []
            for item in page:
                index_key = item.get("index")
                if index_key and checkpoint_end(item) > cursor:
                    candidates.extend(await self.indexes.refs(str(index_key), view.topic_id, view.partition))
            more = extend_chain(candidates, cursor, limit)
            if not more:
                break
            chain.extend(more)
            cursor = more[-1].last_offset + 1
            total += sum(r.length for r in more)
        return chain

    async def _waited_enough(self, view: PartitionView) -> bool:
        """Whether a partial segment is due; starts the wait the first time it is asked."""
        if self.policy.max_wait_ms == 0:
            return True
        now = self.clock.now_ms()
        head = view.head
        if head.pending_since is not None:
            return now - head.pending_since >= self.policy.max_wait_ms
        waiting = TierHead(head.topic_id, head.partition, head.end, head.version + 1, now, exists=True)
        condition = where(version=head.version) if head.exists else ABSENT
        try:
            await self.meta.write([Put(waiting.to_item(), condition)])
        except Conflict:
            pass  # another tierer moved the head; its round decides
        return False

    async def _encode(self, topic: Topic, partition: int, refs: list[SegmentRef], start: int,
                      end: int) -> tuple[EncodedTier, int]:
        async def fetch(ref: SegmentRef) -> bytes:
            return await self.objects.get(ref.object_key, ref.position, ref.position + ref.length)
        ranges = await bounded_map(fetch, refs, self.policy.read_concurrency)
        bytes_in = sum(len(r) for r in ranges)

        def build() -> EncodedTier:
            batches = (decode_partition_blocks(data) for data in ranges)
            return encode_tier(topic.name, partition, records_in(batches, start, end), codec=self.policy.codec,
                               chunk_bytes=self.policy.chunk_bytes)
        # Decoding and re-encoding is CPU-bound: keep it off the event loop.
        return await asyncio.to_thread(build), bytes_in

    async def _put(self, key: str, data: bytes) -> None:
        await put_once(self.objects, key, data)  # content-addressed keys

    async def _swap(self, view: PartitionView, segment: TierSegment) -> int | None:
        """Publish ``segment``; returns the number of checkpoints deleted, or None if another tierer won."""
        pk = keys.partition_pk(view.topic_id, view.partition)
        covered = [c.sk for c in await checkpoints(self.meta, view.topic_id, view.partition,
                                                     ending_at_most=segment.end)
                   if view.newest_sk is not None and c.sk < view.newest_sk]
        head = view.head.advanced(segment.end, None)
        ops = [Put(head.to_item(), where(version=view.head.version) if view.head.exists else ABSENT),
               Put(segment.to_item(), ABSENT)]
        try:
            await with_retries(lambda: self.meta.write(ops))
        except Conflict:
            # Lost the race -- unless an earlier attempt of ours landed before a timeout.
            found = await self.meta.get(pk, segment.sk)
            if found is None or found.get("writer") != segment.writer:
                return None
        # Readers prefer the tier item from now on, so the covered checkpoints can go
        # in plain deletes (1 write unit each, half a transactional delete).  A crash
        # before they are done leaves them to the next round (`_drop_covered`).
        return await delete_items(self.meta, ((pk, sk) for sk in covered))

    async def _drop_covered(self, view: PartitionView, tiered_to: int) -> int:
        """Delete checkpoints left behind because they were the newest at an earlier swap."""
        if not view.head.exists or view.newest_sk is None:
            return 0
        pk = keys.partition_pk(view.topic_id, view.partition)
        stale = [c.sk for c in await checkpoints(self.meta, view.topic_id, view.partition, ending_at_most=tiered_to)
                 if c.sk < view.newest_sk]
        return await delete_items(self.meta, ((pk, sk) for sk in stale))
