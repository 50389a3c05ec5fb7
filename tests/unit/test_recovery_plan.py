"""Which stored ranges form a partition's log when only the bucket survives."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.storage.recovery_plan import IngestRange, TierRange, plan_partition, plan_recovery
from tidelog.storage.segments import PartitionSummary, ProducerBatch


def ingest(first: int, last: int, *, epoch: int, seq: int, session: str = "0-1", topic: str = "t",
           partition: int = 0, producers: tuple = ()) -> IngestRange:
    summary = PartitionSummary(topic, partition, first, last, 1_000 + last, last - first + 1, 100, 50, 0, producers)
    return IngestRange(f"ingest/{session}/{seq:012d}.avro", 500, seq, 1_000 + seq, epoch, summary)


def tier(first: int, last: int, *, modified: int = 1, topic_id: str = "id-1", topic: str = "t") -> TierRange:
    return TierRange(f"tier/topic={topic}/partition=0/{first:020d}-{last + 1:020d}-{topic_id}-{modified:x}.avro",
                     1_000, modified, topic, topic_id, 0, first, last, 5_000 + last, last - first + 1)


def spans(plan) -> list[tuple[int, int]]:
    return [(r.first_offset, r.last_offset) for r in plan.ingest]


def test_a_healthy_log_is_kept_whole() -> None:
    plan = plan_partition("t", 0, [ingest(0, 9, epoch=1, seq=0), ingest(10, 19, epoch=1, seq=1),
                                   ingest(20, 24, epoch=2, seq=0, session="1-1")])
    assert spans(plan) == [(0, 9), (10, 19), (20, 24)]
    assert (plan.log_start_offset, plan.next_offset, plan.max_leader_epoch) == (0, 25, 2)
    assert plan.rejected == [] and plan.holes == []
    assert plan.max_timestamp == 1_024 and plan.record_count == 25


def test_a_fenced_leaders_orphan_loses_to_the_next_epoch() -> None:
    orphan = ingest(10, 19, epoch=1, seq=7)
    plan = plan_partition("t", 0, [ingest(0, 9, epoch=1, seq=6), orphan,
                                   ingest(10, 12, epoch=2, seq=0, session="1-1"),
                                   ingest(13, 15, epoch=2, seq=1, session="1-1")])
    assert spans(plan) == [(0, 9), (10, 12), (13, 15)]
    assert [r.object_key for r in plan.rejected] == [orphan.object_key]
    assert plan.next_offset == 16


def test_an_orphan_reaching_past_its_successors_data_is_still_truncated() -> None:
    # Kafka truncates everything of epoch 1 from the offset epoch 2 started at.
    plan = plan_partition("t", 0, [ingest(0, 9, epoch=1, seq=0), ingest(10, 30, epoch=1, seq=1),
                                   ingest(10, 12, epoch=2, seq=0, session="1-1")])
    assert spans(plan) == [(0, 9), (10, 12)]
    assert plan.next_offset == 13


def test_within_one_epoch_the_later_flush_wins() -> None:
    voided = ingest(10, 19, epoch=3, seq=3)
    plan = plan_partition("t", 0, [ingest(0, 9, epoch=3, seq=2), voided, ingest(10, 14, epoch=3, seq=4),
                                   ingest(15, 30, epoch=3, seq=5)])
    assert spans(plan) == [(0, 9), (10, 14), (15, 30)]
    assert [r.object_key for r in plan.rejected] == [voided.object_key]


def test_an_uncommitted_tail_with_the_highest_rank_cannot_be_told_apart() -> None:
    """The documented at-least-once case: nothing later proves it was never committed."""
    plan = plan_partition("t", 0, [ingest(0, 9, epoch=1, seq=0), ingest(10, 12, epoch=1, seq=1)])
    assert spans(plan) == [(0, 9), (10, 12)]


def test_missing_objects_are_reported_as_holes() -> None:
    plan = plan_partition("t", 0, [ingest(5, 9, epoch=1, seq=1), ingest(20, 29, epoch=1, seq=3)])
    assert plan.holes == [(10, 19)]
    assert (plan.log_start_offset, plan.next_offset) == (5, 30)


def test_tier_segments_replace_the_ingest_ranges_they_cover() -> None:
    covered = [ingest(0, 49, epoch=1, seq=0), ingest(50, 99, epoch=1, seq=1)]
    straddling = ingest(100, 120, epoch=1, seq=2)
    plan = plan_partition("t", 0, [*covered, straddling, ingest(121, 130, epoch=2, seq=0, session="1-1")],
                          [tier(0, 59), tier(60, 109)])
    assert [(t.first_offset, t.last_offset) for t in plan.tier] == [(0, 59), (60, 109)]
    assert spans(plan) == [(100, 120), (121, 130)]
    assert {r.reason for r in plan.rejected} == {"covered by tier segments"}
    assert plan.holes == [] and plan.next_offset == 131


def test_a_gap_between_tier_segments_is_a_hole_not_coverage() -> None:
    plan = plan_partition("t", 0, [ingest(40, 60, epoch=1, seq=0)], [tier(0, 49), tier(100, 149)])
    assert spans(plan) == [(40, 60)]
    assert plan.holes == [(61, 99)]


def test_of_overlapping_tier_segments_the_newest_is_kept() -> None:
    old = tier(0, 99, modified=1)
    rewritten = tier(0, 99, modified=2)
    plan = plan_partition("t", 0, [], [old, rewritten])
    assert plan.tier == [rewritten]
    assert [r.object_key for r in plan.rejected] == [old.object_key]
    assert (plan.log_start_offset, plan.next_offset) == (0, 100)


def test_tier_segments_of_a_deleted_topic_with_the_same_name_are_ignored() -> None:
    plans = plan_recovery([], [tier(0, 99, modified=1, topic_id="old"), tier(0, 9, modified=5, topic_id="new")])
    plan = plans[("t", 0)]
    assert [t.topic_id for t in plan.tier] == ["new"]
    assert plan.next_offset == 10
    assert [r.reason for r in plan.rejected] == ["belongs to an earlier topic of the same name"]


def test_producer_state_is_rebuilt_from_surviving_ranges_only() -> None:
    kept = ingest(0, 4, epoch=1, seq=0, producers=(ProducerBatch(7, 0, 0, 4, 0, 4),))
    orphan = ingest(5, 9, epoch=1, seq=1, producers=(ProducerBatch(7, 0, 5, 9, 5, 9),))
    winner = ingest(5, 7, epoch=2, seq=0, session="1-1", producers=(ProducerBatch(7, 0, 5, 7, 5, 7),))
    plan = plan_partition("t", 0, [kept, orphan, winner])
    assert plan.producers.to_json() == {"7": [0, 1_007, [[0, 4, 0, 4], [5, 7, 5, 7]]]}


def test_plans_cover_every_partition_named_by_any_object() -> None:
    plans = plan_recovery([ingest(0, 1, epoch=1, seq=0, topic="a", partition=2),
                           ingest(0, 1, epoch=1, seq=0, topic="b", partition=0, session="1-1")])
    assert sorted(plans) == [("a", 2), ("b", 0)]


# --- a property: any history the commit protocol allows recovers to exactly its committed log ------


@dataclass
class History:
    ranges: list[IngestRange]
    committed: list[tuple[int, int]]


@st.composite
def histories(draw) -> History:
    """Leader terms one after another, each starting at the committed end (as `LogWriter.acquire`
    does).  A flush attempt either commits or leaves an orphan (crash before commit, voided
    commit, fenced leader), whose offsets the next attempt of the log reuses."""
    ranges: list[IngestRange] = []
    committed: list[tuple[int, int]] = []
    end = 0
    epoch = 0
    for term in range(draw(st.integers(1, 5))):
        epoch += draw(st.integers(1, 2))
        session = f"{term % 3}-{term + 1}"
        attempts = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 6)), min_size=1, max_size=6))
        for seq, (commits, size) in enumerate(attempts):
            ranges.append(ingest(end, end + size - 1, epoch=epoch, seq=seq, session=session))
            if commits:
                committed.append((end, end + size - 1))
                end += size
    if not committed or committed[-1][1] != end - 1 or ranges[-1].last_offset != end - 1:
        # The last attempt must have committed: a trailing orphan is undecidable (see above).
        epoch += 1
        ranges.append(ingest(end, end, epoch=epoch, seq=0, session="9-99"))
        committed.append((end, end))
    return History(ranges, committed)


@settings(max_examples=300, deadline=None)
@given(histories(), st.randoms())
def test_recovery_keeps_exactly_the_committed_log(history: History, rnd) -> None:
    shuffled = list(history.ranges)
    rnd.shuffle(shuffled)
    plan = plan_partition("t", 0, shuffled)
    assert spans(plan) == history.committed
    assert plan.holes == []
    assert plan.next_offset == history.committed[-1][1] + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8), st.integers(1, 4), st.integers(0, 5)),
                min_size=1, max_size=12), st.lists(st.tuples(st.integers(0, 40), st.integers(0, 15)), max_size=3))
def test_survivors_never_overlap_whatever_the_bucket_holds(raw, raw_tier) -> None:
    """Even for object sets the protocol cannot produce (corruption, foreign writers)."""
    ranges = [ingest(first, first + size, epoch=epoch, seq=seq, session=f"0-{i}")
              for i, (first, size, epoch, seq) in enumerate(raw)]
    tiers = [tier(first, first + size, modified=i + 1) for i, (first, size) in enumerate(raw_tier)]
    plan = plan_partition("t", 0, ranges, tiers)
    kept = spans(plan)
    assert all(a[1] < b[0] for a, b in zip(kept, kept[1:]))
    kept_tier = [(t.first_offset, t.last_offset) for t in plan.tier]
    assert all(a[1] < b[0] for a, b in zip(kept_tier, kept_tier[1:]))
    assert len(plan.ingest) + len(plan.tier) + len(plan.rejected) == len(ranges) + len(tiers)
