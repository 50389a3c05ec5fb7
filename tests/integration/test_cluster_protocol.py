"""The lease, session and commit protocol against every metadata backend, with replies lost on purpose.

A lost reply is the ambiguous outcome real stores produce: the write was
applied, the caller only saw a timeout.  ``LostReplies`` wraps a real
MetaStore, applies chosen writes and then raises `Ambiguous`, so each step
of the protocol can be shown to settle it deterministically (the e2e fault
tests show the same through the HTTP fault proxy, statistically).
"""

from __future__ import annotations

import pytest

from tidelog.storage import keys
from tidelog.storage.clock import ManualClock
from tidelog.storage.errors import Ambiguous, Fenced
from tidelog.storage.factory import Storage
from tidelog.storage.partition_log import FlushGroup, LeaseHeld, LogWriter, recover_tail
from tidelog.storage.records import Record, build_batches
from tidelog.storage.retry import Backoff
from tidelog.storage.segments import BatchEntry
from tidelog.storage.sessions import BrokerInfo, Session, fence, view_of
from tests.support.stores import LostReplies, puts_to, storage  # noqa: F401 - storage is a fixture

FAST = Backoff(first_ms=1, max_ms=5, attempts=4)
TOPIC, TOPIC_ID = "orders", "00000000-0000-0000-0000-000000000001"


async def session(meta, node: int, clock: ManualClock) -> Session:
    return await Session.register(meta, BrokerInfo(node, "127.0.0.1", 9092 + node), clock.now_ms())


def batch(base_offset: int, count: int, producer_id: int, first_seq: int) -> BatchEntry:
    records = [Record(base_offset + i, 1_700_000_000_000 + i, None, b"v%d" % (base_offset + i)) for i in range(count)]
    [data] = build_batches(records, producer_id=producer_id, producer_epoch=0, base_sequence=first_seq)
    return BatchEntry.from_batch(data)


async def commit_batches(writer: LogWriter, partition: int, base: int, count: int, producer_id: int = 7):
    return await writer.commit([FlushGroup(TOPIC, TOPIC_ID, partition, [batch(base, count, producer_id, base)])])


# --- lost replies ------------------------------------------------------------------------------
async def test_acquire_whose_reply_was_lost_still_takes_the_partition(storage: Storage) -> None:
    clock = ManualClock()
    meta = LostReplies(storage.meta)
    writer = LogWriter(storage.objects, meta, await session(meta, 1, clock), clock, FAST)
    meta.lose(puts_to(keys.LEASES_PK))
    got = await writer.acquire(TOPIC, TOPIC_ID, 0)
    assert meta.lost == 1
    lease = await storage.meta.get(keys.LEASES_PK, keys.lease_sk(TOPIC_ID, 0))
    assert (lease.get("owner_node"), lease.get("owner_epoch")) == (1, writer.session.epoch)
    assert lease.get("leader_epoch") == got.lease.leader_epoch == 1


async def test_a_lease_left_naming_our_own_session_is_taken_again_with_recovery(storage: Storage) -> None:
    """If a lost reply was not recognised, the lease names us while we do not lead: re-acquire it."""
    clock = ManualClock()
    writer = LogWriter(storage.objects, storage.meta, await session(storage.meta, 1, clock), clock, FAST)
    first = await writer.acquire(TOPIC, TOPIC_ID, 0)
    await commit_batches(writer, 0, 0, 3)
    again = await writer.acquire(TOPIC, TOPIC_ID, 0)  # as after forgetting the partition
    assert again.lease.leader_epoch == first.lease.leader_epoch + 1
    assert again.next_offset == 3


async def test_release_and_log_start_whose_replies_were_lost_succeed(storage: Storage) -> None:
    clock = ManualClock()
    meta = LostReplies(storage.meta)
    writer = LogWriter(storage.objects, meta, await session(meta, 1, clock), clock, FAST)
    got = await writer.acquire(TOPIC, TOPIC_ID, 0)
    meta.lose(puts_to(keys.LEASES_PK))
    await writer.set_log_start(got.lease, 0)
    from tidelog.storage.partition_log import CheckpointInput

    meta.lose(puts_to(keys.LEASES_PK))
    await writer.release(CheckpointInput(got.lease, 0, 0, -1, [], got.producers))
    assert meta.lost == 2
    lease = await storage.meta.get(keys.LEASES_PK, keys.lease_sk(TOPIC_ID, 0))
    assert lease.get("owner_node") is None


async def test_commit_whose_reply_was_lost_is_committed_once(storage: Storage) -> None:
    clock = ManualClock()
    meta = LostReplies(storage.meta)
    writer = LogWriter(storage.objects, meta, await session(meta, 1, clock), clock, FAST)
    await writer.acquire(TOPIC, TOPIC_ID, 0)
    meta.lose(puts_to(keys.commit_log_pk(writer.session.name)))
    done = await commit_batches(writer, 0, 0, 2)
    log = await storage.meta.query(keys.commit_log_pk(writer.session.name))
    assert [(i.sk, i.get("object"), i.get("void")) for i in log] == [(keys.commit_log_sk(done.seq), done.object_key, None)]


async def test_renewal_whose_reply_was_lost_is_not_mistaken_for_fencing(storage: Storage) -> None:
    clock = ManualClock()
    meta = LostReplies(storage.meta)
    mine = await session(meta, 1, clock)
    meta.lose(puts_to(keys.BROKERS_PK))
    with pytest.raises(Ambiguous):
        await mine.renew()
    await mine.renew()  # finds heartbeat 1 (our lost write) and renews on top of it
    stored = view_of(await storage.meta.get(keys.BROKERS_PK, keys.broker_sk(1)))
    assert (stored.heartbeat, stored.fenced) == (2, False)


async def test_close_whose_reply_was_lost_or_raced_a_renewal_still_closes(storage: Storage) -> None:
    clock = ManualClock()
    meta = LostReplies(storage.meta)
    mine = await session(meta, 1, clock)
    meta.lose(puts_to(keys.BROKERS_PK))
    await mine.close()
    assert view_of(await storage.meta.get(keys.BROKERS_PK, keys.broker_sk(1))).alive is False

    other = await session(storage.meta, 2, clock)
    racing = Session(storage.meta, other.info, other.epoch, other._item)
    await racing.renew()  # lands first; ``other`` still holds heartbeat 0
    await other.close()
    assert view_of(await storage.meta.get(keys.BROKERS_PK, keys.broker_sk(2))).alive is False


# --- fencing and recovery ----------------------------------------------------------------------
async def test_fenced_or_closed_session_commits_nothing_and_the_new_owner_recovers_everything(storage: Storage) -> None:
    clock = ManualClock()
    old = LogWriter(storage.objects, storage.meta, await session(storage.meta, 1, clock), clock, FAST)
    await old.acquire(TOPIC, TOPIC_ID, 0)
    await commit_batches(old, 0, 0, 3)
    await commit_batches(old, 0, 3, 2)
    view = view_of(await storage.meta.get(keys.BROKERS_PK, keys.broker_sk(1)))
    assert await fence(storage.meta, view)
    with pytest.raises(Fenced):
        await commit_batches(old, 0, 5, 1)

    new = LogWriter(storage.objects, storage.meta, await session(storage.meta, 2, clock), clock, FAST)
    got = await new.acquire(TOPIC, TOPIC_ID, 0)
    assert got.next_offset == 5
    verdict = got.producers.check(7, 0, 3, 4)  # the last committed batch, retried
    assert verdict.action == "duplicate" and verdict.batch.base_offset == 3
    assert got.producers.check(7, 0, 5, 5).action == "append"

    await new.session.close()
    with pytest.raises(Fenced):
        await commit_batches(new, 0, 5, 1)


async def test_another_session_cannot_take_a_live_lease(storage: Storage) -> None:
    clock = ManualClock()
    owner = LogWriter(storage.objects, storage.meta, await session(storage.meta, 1, clock), clock, FAST)
    await owner.acquire(TOPIC, TOPIC_ID, 0)
    rival = LogWriter(storage.objects, storage.meta, await session(storage.meta, 2, clock), clock, FAST)
    with pytest.raises(LeaseHeld):
        await rival.acquire(TOPIC, TOPIC_ID, 0)


async def test_recovery_after_a_graceful_release_needs_no_commit_log_scan(storage: Storage) -> None:
    clock = ManualClock()
    owner = LogWriter(storage.objects, storage.meta, await session(storage.meta, 1, clock), clock, FAST)
    got = await owner.acquire(TOPIC, TOPIC_ID, 0)
    done = await commit_batches(owner, 0, 0, 4)
    from tidelog.storage.partition_log import CheckpointInput

    ref = done.refs[(TOPIC_ID, 0)]
    await owner.release(CheckpointInput(got.lease, 0, 4, ref.max_timestamp, [ref], got.producers))
    await commit_batches(owner, 1, 0, 2)  # the old owner goes on committing other partitions
    full = await recover_tail(storage.objects, storage.meta, TOPIC, TOPIC_ID, 0)
    quick = await recover_tail(storage.objects, storage.meta, TOPIC, TOPIC_ID, 0, scan_log=False)
    assert (quick.next_offset, quick.start_offset) == (full.next_offset, full.start_offset) == (4, 4)
    taker = LogWriter(storage.objects, storage.meta, await session(storage.meta, 2, clock), clock, FAST)
    assert (await taker.acquire(TOPIC, TOPIC_ID, 0)).next_offset == 4


class CountingGets:
    """An object store that counts GETs per key."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.gets: dict[str, int] = {}

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.gets[key] = self.gets.get(key, 0) + 1
        return await self.inner.get(key, start, end)


async def test_a_takeover_reads_each_object_once_for_all_its_partitions(storage: Storage) -> None:
    from tidelog.storage.partition_log import HeaderCache

    clock = ManualClock()
    owner = LogWriter(storage.objects, storage.meta, await session(storage.meta, 1, clock), clock, FAST)
    partitions = range(4)
    for p in partitions:
        await owner.acquire(TOPIC, TOPIC_ID, p)
    for flush in range(3):
        await owner.commit([FlushGroup(TOPIC, TOPIC_ID, p, [batch(flush * 2, 2, 7 + p, flush * 2)])
                            for p in partitions])
    alone = [await recover_tail(storage.objects, storage.meta, TOPIC, TOPIC_ID, p) for p in partitions]

    counting = CountingGets(storage.objects)
    shared = HeaderCache(counting)
    together = [await recover_tail(counting, storage.meta, TOPIC, TOPIC_ID, p, headers=shared) for p in partitions]
    assert [(t.next_offset, t.refs) for t in together] == [(a.next_offset, a.refs) for a in alone]
    assert [t.next_offset for t in together] == [6] * 4
    assert len(counting.gets) == 3 and set(counting.gets.values()) == {1}  # 3 objects, one GET each

    # A cache with room for one object's summaries evicts, re-reads, and still answers the same.
    rereading = CountingGets(storage.objects)
    tiny = HeaderCache(rereading, max_summaries=4)
    again = [await recover_tail(rereading, storage.meta, TOPIC, TOPIC_ID, p, headers=tiny) for p in partitions]
    assert [(t.next_offset, t.refs) for t in again] == [(a.next_offset, a.refs) for a in alone]
    assert sum(rereading.gets.values()) > 3
