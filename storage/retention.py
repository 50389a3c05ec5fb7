"""Delete retention for stored segments, run outside the partition leader.

Kafka deletes whole segments from the head of a log while the oldest is past
``retention.ms`` (its largest timestamp is older than now minus the
retention) or while removing it still leaves at least ``retention.bytes``;
it stops at the first segment it keeps.  Here the segments are the
partition's tier segments followed by its untiered checkpoint ranges (sized
from their index objects).  Data only the leader holds (after the newest
checkpoint) is left to the leader's own retention pass (`broker.logs`),
which applies the same rule (`retention_rule`) to finer spans.

Advancing the log start.  The leader owns ``log_start_offset`` in the lease
item, and every lease write is conditioned on the lease version, so a
write from here would fence the leader.  Retention raises a separate,
monotonic *floor* item instead (`tier_state.raise_floor`); everyone honours
``max(lease.log_start_offset, floor)``: the leader adopts the floor on its
next retention pass, tiering starts above it.

Deleting.  Metadata items wholly below the log start are deleted: tier
items, and checkpoints except the newest (crash recovery starts from it).
While the partition has a live leader, only what is below the leader's own
log start goes, so a consumer can never be sent past records the leader
still claims to hold; without a live leader the floor itself is used.
Objects are never deleted here: once no item refers to them the sweeper
removes them after its grace period.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass

from . import keys
from .catalog import Topic
from .clock import Clock
from .ports import MetaStore, ObjectStore
from .retention_rule import RetentionScan, Span
from .tier_items import TierSegment, checkpoint_end, checkpoint_start
from .tier_state import (
    IndexCache,
    PartitionView,
    checkpoints,
    delete_items,
    lease_is_live,
    load_partition,
    raise_floor,
)

PAGE = 32


@dataclass(frozen=True, slots=True)
class Segment:
    """A deletable unit of a partition's log: offsets ``[start, end)``, newest timestamp, stored bytes."""

    start: int
    end: int
    max_timestamp: int
    size: int


def retained_start(segments: Sequence[Segment], *, log_start: int, now_ms: int, retention_ms: int,
                   retention_bytes: int) -> int:
    """The log start after deleting what Kafka's rules allow, given segments oldest first.

    A negative limit is off.  A segment whose timestamp is unknown (negative)
    is never old enough: tidelog never deletes data early.
    """
    live = [s for s in segments if s.end > log_start]
    if not live:
        return log_start
    scan = RetentionScan(log_start=log_start, high_watermark=live[-1].end, now_ms=now_ms,
                         retention_ms=retention_ms, retention_bytes=retention_bytes,
                         log_bytes=sum(s.size for s in live))
    for s in live:
        if not scan.offer(Span(s.start, s.end - 1, s.max_timestamp, s.size)):
            break
    return scan.log_start


@dataclass(slots=True)
class RetentionResult:
    topic: str
    partition: int
    log_start_before: int = 0
    log_start: int = 0
    tier_deleted: int = 0
    checkpoints_deleted: int = 0

    @property
    def state(self) -> str:
        if self.log_start > self.log_start_before:
            return "advanced"
        return "cleaned" if self.tier_deleted or self.checkpoints_deleted else "idle"

    def to_json(self) -> dict:
        return {**asdict(self), "state": self.state}


class RetentionService:
    def __init__(self, objects: ObjectStore, meta: MetaStore, clock: Clock,
                 index_cache: IndexCache | None = None) -> None:
        self.objects = objects
        self.meta = meta
        self.clock = clock
        self.indexes = index_cache or IndexCache(objects)

    async def enforce(self, topic: Topic, partition: int) -> RetentionResult:
        view = await load_partition(self.meta, topic.topic_id, partition)
        result = RetentionResult(topic.name, partition, view.log_start, view.log_start)
        retention_ms = topic.config_int("retention.ms")
        retention_bytes = topic.config_int("retention.bytes")
        if "delete" in topic.config("cleanup.policy") and (retention_ms >= 0 or retention_bytes >= 0):
            segments = []
            async for segment in self._segments(view):
                segments.append(segment)
                # Without a size limit the first segment kept ends the scan.
                if retention_bytes < 0 and not (0 <= segment.max_timestamp < self.clock.now_ms() - retention_ms):
                    break
            start = retained_start(segments, log_start=view.log_start, now_ms=self.clock.now_ms(),
                                   retention_ms=retention_ms, retention_bytes=retention_bytes)
            if start > view.log_start:
                result.log_start = await raise_floor(self.meta, topic.topic_id, partition, start)
        safe = result.log_start
        if safe > view.lease_log_start and await lease_is_live(self.meta, view.lease):
            safe = view.lease_log_start
        await self._delete_below(view, safe, result)
        return result

    async def _segments(self, view: PartitionView) -> AsyncIterator[Segment]:
        """Tier segments, then untiered checkpoint ranges, oldest first, from the log start on."""
        pk = keys.partition_pk(view.topic_id, view.partition)
        cursor = view.log_start
        after = keys.tier_sk(cursor)
        while True:
            items = await self.meta.query(pk, prefix=keys.TIER_PREFIX, after=after, limit=PAGE)
            for item in items:
                seg = TierSegment.from_item(item)
                yield Segment(seg.start, seg.end, seg.max_timestamp, seg.size)
                cursor = max(cursor, seg.end)
            if len(items) < PAGE:
                break
            after = items[-1].sk
        cursor = max(cursor, view.head.end)
        while True:
            page = await checkpoints(self.meta, view.topic_id, view.partition, ending_after=cursor, limit=PAGE)
            for item in page:
                end = checkpoint_end(item)
                index_key = item.get("index")
                if end <= cursor or not index_key:
                    continue
                refs = [r for r in await self.indexes.refs(str(index_key), view.topic_id, view.partition)
                        if r.last_offset >= cursor]
                if refs:
                    yield Segment(max(checkpoint_start(item), cursor), end,
                                  max(r.max_timestamp for r in refs), sum(r.length for r in refs))
                cursor = end
            if len(page) < PAGE:
                return

    async def _delete_below(self, view: PartitionView, offset: int, result: RetentionResult) -> None:
        if offset <= 0:
            return
        pk = keys.partition_pk(view.topic_id, view.partition)
        tier = await self.meta.query(pk, prefix=keys.TIER_PREFIX, before=keys.tier_sk(offset + 1))
        old = [c.sk for c in await checkpoints(self.meta, view.topic_id, view.partition, ending_at_most=offset)
               if view.newest_sk is not None and c.sk < view.newest_sk]
        result.tier_deleted = await delete_items(self.meta, ((pk, i.sk) for i in tier))
        result.checkpoints_deleted = await delete_items(self.meta, ((pk, sk) for sk in old))
