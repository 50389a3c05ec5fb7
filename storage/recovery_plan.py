"""Which stored ranges make up each partition's log when only the bucket survives (pure).

Recovery after losing the metadata store (`recovery`) sees every object the
bucket holds, committed or not: a flush whose commit never happened (a crash
between PUT and commit, a fenced broker, a voided ambiguous commit) leaves an
ingest object that may overlap offsets a later flush committed.  This module
decides, per partition, which ranges form the log.

Rules, the way Kafka truncates a follower's log by leader epoch:

* Every ingest range (one partition's batches in one object) carries the
  partition leader epoch its leader patched into each batch.  Ranges are
  ranked by ``(leader epoch, session seq, created ms, key)``.
* A range survives only if every range ranked above it starts after the
  range's last offset.  A leader of epoch E+1 starting at offset X proves the
  committed log ended at X when it took over, so whatever an older epoch
  wrote at X or beyond was never committed.  Within one leader epoch one
  session assigns offsets from its committed end, so a later object starting
  at X proves the earlier ones reaching X were never committed.
* Survivors never overlap: of two, the lower-ranked one ends before the
  higher-ranked one starts.  A range cannot be cut (its bytes are whole
  batches in one object), so what a rule rejects is rejected whole.
* Tier segments are made from checkpointed, hence committed, data only, so
  they win over ingest ranges: an ingest range entirely inside the tier
  segments' offsets is dropped.  Of overlapping tier segments (two tiering
  runs raced, or compaction rewrote one) the newest object is kept.

What cannot be decided from the objects alone, and is therefore reported but
kept: an uncommitted object at the very end of a partition's log with the
highest rank (its producers were told the write failed, so it may show up
as an at-least-once duplicate), and holes (offsets no surviving range holds,
e.g. objects replication had not copied yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import CorruptData
from .model import SegmentRef
from .producers import ProducerStates
from .records import parse_header
from .segments import BatchEntry, PartitionSummary


@dataclass(frozen=True, slots=True)
class IngestRange:
    """One partition's batches in one ingest object, as its header and batches describe them."""

    object_key: str
    object_size: int
    seq: int
    created_ms: int
    leader_epoch: int
    summary: PartitionSummary

    @property
    def topic(self) -> str:
        return self.summary.topic

    @property
    def partition(self) -> int:
        return self.summary.partition

    @property
    def first_offset(self) -> int:
        return self.summary.first_offset

    @property
    def last_offset(self) -> int:
        return self.summary.last_offset

    @property
    def rank(self) -> tuple[int, int, int, str]:
        return (self.leader_epoch, self.seq, self.created_ms, self.object_key)

    def ref(self) -> SegmentRef:
        return self.summary.ref(self.object_key)


@dataclass(frozen=True, slots=True)
class TierRange:
    """One tier segment object, as its header describes it."""

    object_key: str
    size: int
    last_modified_ms: int
    topic: str
    topic_id: str
    partition: int
    first_offset: int  # the range the segment answers for (from its key), not its first record
    last_offset: int
    max_timestamp: int
    record_count: int


@dataclass(frozen=True, slots=True)
class Rejected:
    object_key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    leader_epoch: int
    reason: str


@dataclass(slots=True)
class PartitionPlan:
    """The recovered log of one partition: what to index, and what the new leader starts from."""

    topic: str
    partition: int
    tier: list[TierRange] = field(default_factory=list)
    ingest: list[IngestRange] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    holes: list[tuple[int, int]] = field(default_factory=list)
    max_leader_epoch: int = 0
    log_start_offset: int = 0
    next_offset: int = 0
    max_timestamp: int = -1
    record_count: int = 0
    producers: ProducerStates = field(default_factory=ProducerStates)

    @property
    def empty(self) -> bool:
        return not self.tier and not self.ingest


def leader_epoch_of(entries: Sequence[BatchEntry], *, object_key: str, topic: str, partition: int) -> int:
    """The leader epoch of a flushed range: one leader patches every batch of one flush alike.

    The epoch sits outside the batch CRC, so disagreement is the one sign of
    corruption there that a reader can see.
    """
    epochs = {parse_header(e.batch).partition_leader_epoch for e in entries}
    if len(epochs) != 1:
        raise CorruptData("batches of one flushed range carry different leader epochs", key=object_key,
                          topic=topic, partition=partition, epochs=sorted(epochs))
    return epochs.pop()


def plan_partition(topic: str, partition: int, ingest: Iterable[IngestRange],
                   tier: Iterable[TierRange] = ()) -> PartitionPlan:
    plan = PartitionPlan(topic, partition)
    tiers = _choose_tier(plan, tier)
    ranges = sorted(ingest, key=lambda r: r.rank, reverse=True)
    plan.max_leader_epoch = max((r.leader_epoch for r in ranges), default=0)
    lowest_first_above: int | None = None
    survivors: list[IngestRange] = []
    for r in ranges:
        if lowest_first_above is not None and r.last_offset >= lowest_first_above:
            plan.rejected.append(_rejected(r, "superseded by a later leader epoch or flush at offset "
                                              f"{lowest_first_above}"))
        elif _covered(r.first_offset, r.last_offset, tiers):
            plan.rejected.append(_rejected(r, "covered by tier segments"))
        else:
            survivors.append(r)
        lowest_first_above = r.first_offset if lowest_first_above is None else min(lowest_first_above, r.first_offset)
    plan.tier = tiers
    plan.ingest = sorted(survivors, key=lambda r: r.first_offset)
    _summarise(plan)
    return plan


def plan_recovery(ingest: Iterable[IngestRange], tier: Iterable[TierRange] = ()) -> dict[tuple[str, int], PartitionPlan]:
    """Plans for every partition any object mentions, keyed by (topic, partition).

    Tier segments of a topic name that was deleted and re-created carry the
    old topic id in their keys; only the id of the newest segment is kept.
    """
    tier = list(tier)
    ids = topic_ids(tier)
    by_partition: dict[tuple[str, int], tuple[list[IngestRange], list[TierRange], list[Rejected]]] = {}
    for r in ingest:
        by_partition.setdefault((r.topic, r.partition), ([], [], []))[0].append(r)
    for t in tier:
        found = by_partition.setdefault((t.topic, t.partition), ([], [], []))
        if t.topic_id == ids[t.topic]:
            found[1].append(t)
        else:
            found[2].append(Rejected(t.object_key, t.topic, t.partition, t.first_offset, t.last_offset, -1,
                                     "belongs to an earlier topic of the same name"))
    plans = {}
    for key, (ingest_ranges, tier_ranges, rejected) in sorted(by_partition.items()):
        plan = plan_partition(key[0], key[1], ingest_ranges, tier_ranges)
        plan.rejected.extend(rejected)
        plans[key] = plan
    return plans


def topic_ids(tier: Iterable[TierRange]) -> dict[str, str]:
    """Topic name -> the id in its newest tier segment's key."""
    newest: dict[str, tuple[int, str, str]] = {}
    for t in tier:
        seen = (t.last_modified_ms, t.object_key, t.topic_id)
        if t.topic not in newest or seen > newest[t.topic]:
            newest[t.topic] = seen
    return {name: found[2] for name, found in newest.items()}


def _choose_tier(plan: PartitionPlan, tier: Iterable[TierRange]) -> list[TierRange]:
    kept: list[TierRange] = []
    for t in sorted(tier, key=lambda t: (t.last_modified_ms, t.object_key), reverse=True):
        if any(t.first_offset <= k.last_offset and k.first_offset <= t.last_offset for k in kept):
            plan.rejected.append(Rejected(t.object_key, t.topic, t.partition, t.first_offset, t.last_offset, -1,
                                          "overlaps a newer tier segment"))
            continue
        kept.append(t)
    return sorted(kept, key=lambda t: t.first_offset)


def _covered(first: int, last: int, tiers: Sequence[TierRange]) -> bool:
    """True if tier segments (sorted, disjoint) answer for every offset of [first, last]."""
    expected = first
    for t in tiers:
        if t.last_offset < expected or t.first_offset > last:
            continue
        if t.first_offset > expected:
            return False
        expected = t.last_offset + 1
        if expected > last:
            return True
    return False


def _rejected(r: IngestRange, reason: str) -> Rejected:
    return Rejected(r.object_key, r.topic, r.partition, r.first_offset, r.last_offset, r.leader_epoch, reason)


def _summarise(plan: PartitionPlan) -> None:
    """Fill in offsets, holes and producer state from the chosen ranges, oldest first."""
    spans: list[tuple[int, int, int, int]] = [
        (t.first_offset, t.last_offset, t.max_timestamp, t.record_count) for t in plan.tier]
    spans += [(r.first_offset, r.last_offset, r.summary.max_timestamp, r.summary.record_count) for r in plan.ingest]
    spans.sort()
    if not spans:
        return
    plan.log_start_offset = spans[0][0]
    end = spans[0][0]
    for first, last, max_ts, count in spans:
        if first > end:
            plan.holes.append((end, first - 1))
        end = max(end, last + 1)
        plan.max_timestamp = max(plan.max_timestamp, max_ts)
        plan.record_count += count
    plan.next_offset = end
    for r in plan.ingest:
        for pid, epoch, first_seq, last_seq, base, last in r.summary.producers:
            plan.producers.append(pid, epoch, first_seq, last_seq, base, last, r.summary.max_timestamp)
