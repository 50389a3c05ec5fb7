"""Log compaction (``cleanup.policy=compact``) of tiered data, as Kafka's cleaner does it.

Rules:

* Keep the latest record for each key; records keep their offsets, so a
  compacted log has gaps, exactly as in Kafka.  Records without a key are
  kept (Kafka refuses them on compacted topics; we never drop data we cannot
  reason about).
* A tombstone (null value) that is the latest for its key is kept until
  ``delete.retention.ms`` after its segment was first cleaned, then dropped.
* ``min.compaction.lag.ms``: the cleanable range ends at the first segment
  (past the cleaner checkpoint) whose largest timestamp is newer than now
  minus the lag; later records neither get compacted nor supersede others.
* Only tier segments are compacted; untiered (checkpointed or in-memory)
  data is Kafka's "active segment" and is served as written.  The last
  tiered record always stays (only a tombstone could go, being the latest
  of its key): while nothing follows it, it is the log's last record, and a
  consumer whose position fell into a gap at the very end of the log would
  wait forever below the high watermark (Kafka's active segment, never
  cleaned, gives the same guarantee).

A pass builds the key -> latest offset map from the *dirty* segments
(``[cleaned_to, upper)``, where ``cleaned_to`` is the cleaner checkpoint in
the ``compaction`` item), then rewrites every segment below ``upper`` that
loses records, oldest first, merging runs of changed neighbours up to the
target segment size.  Once the clean section is already compacted, keys
there are unique, so a map of the dirty section suffices.  A pass starts
only when dirty bytes are at least ``min_dirty_ratio`` of the cleanable
log (Kafka's ``min.cleanable.dirty.ratio``), so total cleaning work stays
proportional to the bytes written; segments whose tombstones are due are
rewritten on their own in between.

Each rewrite is one conditional metadata write: Put the new tier item at
the key of the run's last segment and Delete the others, each conditioned
on the ``gen`` read, so readers see either the old items or the new one and
a concurrent retention, compaction or rewrite makes the pass stop cleanly.
Old objects stay readable until the sweeper's grace period has passed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from . import keys
from .catalog import Topic
from .clock import Clock, make_random
from .conditions import ABSENT, MAX_WRITE_OPS, Delete, Put, where
from .errors import Conflict
from .ports import MetaStore, ObjectStore
from .records import Record
from .retry import put_once, with_retries
from .segments import decode_tier_segment
from .tier_codec import encode_tier, record_size
from .tier_items import CompactionState, TierSegment
from .tier_state import load_partition, tier_segments
from .tiering import TierPolicy

DEFAULT_MIN_DIRTY_RATIO = 0.5
DEFAULT_MAX_MAP_KEYS = 2_000_000


# --------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------


def latest_offsets(records: Iterable[Record], into: dict[bytes, int]) -> None:
    """Record each key's latest offset (records oldest first)."""
    for r in records:
        if r.key is not None:
            into[r.key] = r.offset


def compact(records: Iterable[Record], latest: Mapping[bytes, int], *, drop_tombstones: bool,
            keep: int = -1) -> list[Record]:
    """The records that survive: not superseded by a later record of their key, and
    not a tombstone whose retention is over.  The record at offset ``keep`` always survives."""
    out = []
    for r in records:
        if r.key is not None and r.offset != keep:
            newest = latest.get(r.key)
            if newest is not None and newest > r.offset:
                continue
            if r.value is None and drop_tombstones:
                continue
        out.append(r)
    return out


def cleanable_upper(segments: Sequence[TierSegment], cleaned_to: int, now_ms: int, min_lag_ms: int) -> int:
    """End of the cleanable range: stop at the first dirty segment younger than the lag."""
    upper = cleaned_to
    for s in segments:
        if s.end <= cleaned_to:
            continue
        if s.max_timestamp > now_ms - min_lag_ms:
            break
        upper = s.end
    return upper


def tombstones_due(segment: TierSegment, now_ms: int, delete_retention_ms: int) -> bool:
    return (segment.tombstones > 0 and segment.cleaned_ms is not None
            and segment.cleaned_ms + delete_retention_ms <= now_ms)


@dataclass(slots=True)
class CompactionResult:
    topic: str
    partition: int
    state: str = "idle"  # idle | compacted | conflict | not-compacted-topic
    cleaned_to: int = 0
    segments_read: int = 0
    segments_rewritten: int = 0
    records_before: int = 0
    records_after: int = 0
    objects: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Run:
    """Consecutive changed segments being merged into one rewrite."""

    members: list[TierSegment] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    raw_bytes: int = 0
    cleaned_ms: int = 0


# --------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------


class Compactor:
    def __init__(self, objects: ObjectStore, meta: MetaStore, clock: Clock, policy: TierPolicy = TierPolicy(), *,
                 min_dirty_ratio: float = DEFAULT_MIN_DIRTY_RATIO, max_map_keys: int = DEFAULT_MAX_MAP_KEYS,
                 rng: random.Random | None = None) -> None:
        self.objects = objects
        self.meta = meta
        self.clock = clock
        self.policy = policy
        self.rng = rng or make_random()
        self.min_dirty_ratio = min_dirty_ratio
        self.max_map_keys = max_map_keys

    async def compact_partition(self, topic: Topic, partition: int) -> CompactionResult:
        result = CompactionResult(topic.name, partition)
        if not topic.compacted:
            result.state = "not-compacted-topic"
            return result
        view = await load_partition(self.meta, topic.topic_id, partition)
        state_item = await self.meta.get(keys.partition_pk(topic.topic_id, partition), keys.COMPACTION_SK)
        state = CompactionState.from_item(topic.topic_id, partition, state_item)
        result.cleaned_to = state.cleaned_to
        segments = await tier_segments(self.meta, topic.topic_id, partition, covering_from=view.log_start)
        now = self.clock.now_ms()
        lag = max(0, topic.config_int("min.compaction.lag.ms"))
        retention = max(0, topic.config_int("delete.retention.ms"))
        upper = cleanable_upper(segments, state.cleaned_to, now, lag)
        dirty = [s for s in segments if state.cleaned_to < s.end <= upper]
        cleanable = [s for s in segments if s.end <= upper]
        dirty_bytes = sum(s.raw_bytes for s in dirty)
        total = sum(s.raw_bytes for s in cleanable)
        full = bool(dirty) and (total == 0 or dirty_bytes / total >= self.min_dirty_ratio)
        due = [s for s in segments if tombstones_due(s, now, retention)]
        if not full and not due:
            return result

        latest: dict[bytes, int] = {}
        if full:
            for s in dirty:
                latest_offsets(await self._records(s, result), latest)
                if len(latest) >= self.max_map_keys and s.end < upper:
                    upper = s.end  # the map is full: clean up to here, the rest next pass
                    break
            targets = [s for s in segments if s.end <= upper]
        else:
            targets = due
        last = segments[-1].end - 1
        try:
            await self._rewrite(topic, targets, latest, now, retention, state.cleaned_to, last, result)
        except Conflict:
            result.state = "conflict"
            return result
        if full:
            await self._advance(state, upper)
            result.cleaned_to = upper
        result.state = "compacted"
        return result

    async def _records(self, segment: TierSegment, result: CompactionResult) -> list[Record]:
        if segment.object_key is None:
            return []
        data = await self.objects.get(segment.object_key)
        result.segments_read += 1
        _, records = await asyncio.to_thread(decode_tier_segment, data)
        return records

    async def _rewrite(self, topic: Topic, targets: list[TierSegment], latest: dict[bytes, int], now: int,
                       retention: int, cleaned_to: int, last: int, result: CompactionResult) -> None:
        target_bytes = self.policy.target_for(topic)
        run = _Run()
        for s in targets:
            records = await self._records(s, result)
            kept = compact(records, latest, drop_tombstones=tombstones_due(s, now, retention), keep=last)
            result.records_before += len(records)
            result.records_after += len(kept)
            first_clean = s.end > cleaned_to and s.cleaned_ms is None
            if len(kept) == len(records):
                await self._flush(topic, run, result)
                run = _Run()
                if first_clean and s.tombstones:  # nothing dropped, but its tombstones' clock starts now
                    await self._replace([s], s.rewritten(cleaned_ms=now, writer=self._token()))
                continue
            size = sum(record_size(r) for r in kept)
            if run.members and (run.members[-1].end != s.start or run.raw_bytes + size > target_bytes
                                or len(run.members) >= MAX_WRITE_OPS):
                await self._flush(topic, run, result)
                run = _Run()
            run.members.append(s)
            run.records.extend(kept)
            run.raw_bytes += size
            run.cleaned_ms = max(run.cleaned_ms, now if first_clean else (s.cleaned_ms or now))
        await self._flush(topic, run, result)

    async def _flush(self, topic: Topic, run: _Run, result: CompactionResult) -> None:
        if not run.members:
            return
        first, last = run.members[0], run.members[-1]
        base = dict(topic_id=topic.topic_id, partition=first.partition, start=first.start, end=last.end,
                    codec=self.policy.codec, gen=last.gen + 1, created_ms=self.clock.now_ms(),
                    cleaned_ms=run.cleaned_ms, writer=self._token())
        if run.records:
            encoded = await asyncio.to_thread(encode_tier, topic.name, first.partition, run.records,
                                              codec=self.policy.codec, chunk_bytes=self.policy.chunk_bytes)
            key = keys.tier_object_key(topic.name, first.partition, topic.topic_id, first.start, last.end,
                                       encoded.digest)
            await self._put(key, encoded.data)
            segment = TierSegment(object_key=key, size=len(encoded.data), max_timestamp=encoded.max_timestamp,
                                  record_count=encoded.record_count, tombstones=encoded.tombstones,
                                  raw_bytes=encoded.raw_bytes, chunks=encoded.chunks, **base)
            result.objects.append(key)
        else:
            # Everything was compacted away; the item keeps answering for the range.
            segment = TierSegment(object_key=None, size=0, max_timestamp=max(m.max_timestamp for m in run.members),
                                  record_count=0, tombstones=0, raw_bytes=0, chunks=(), **base)
        await self._replace(run.members, segment)
        result.segments_rewritten += len(run.members)

    async def _replace(self, members: list[TierSegment], segment: TierSegment) -> None:
        """Swap ``members`` (consecutive, oldest first) for ``segment`` in one conditional write."""
        pk = keys.partition_pk(segment.topic_id, segment.partition)
        ops = [Put(segment.to_item(), where(gen=members[-1].gen))]
        ops += [Delete(pk, m.sk, where(gen=m.gen)) for m in members[:-1]]
        try:
            await with_retries(lambda: self.meta.write(ops))
        except Conflict:
            found = await self.meta.get(pk, segment.sk)
            if found is None or found.get("writer") != segment.writer:
                raise  # someone else changed these segments: stop this pass
            # else an earlier attempt of ours landed before a timeout

    def _token(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    async def _put(self, key: str, data: bytes) -> None:
        await put_once(self.objects, key, data)  # content-addressed keys

    async def _advance(self, state: CompactionState, upper: int) -> None:
        if upper <= state.cleaned_to:
            return
        updated = CompactionState(state.topic_id, state.partition, upper, state.version + 1, exists=True)
        try:
            await self.meta.write([Put(updated.to_item(), where(version=state.version) if state.exists else ABSENT)])
        except Conflict:
            pass  # a concurrent pass moved it; the next pass re-reads it
