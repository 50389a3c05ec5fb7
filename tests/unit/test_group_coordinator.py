"""The group coordinator's rules, driven by hand: a manual clock, no sockets, no ticker.

Each test drives `GroupCoordinator` directly on the embedded (SQLite) group
store and calls `run_maintenance` where the background ticker would run.
Protocol-level behaviour with real clients is in `tests/e2e/test_groups_*`.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from tidelog.broker.errors import ErrorCode
from tidelog.broker.groups.coordinator import GroupCoordinator, JoinResult
from tidelog.broker.groups.state import COMPLETING, EMPTY, PREPARING, STABLE
from tidelog.storage.adapters.sqlite import SqliteMetaStore
from tidelog.storage.clock import ManualClock
from tidelog.storage.errors import Unavailable
from tidelog.storage.groups import CommittedOffset, GenerationFenced, GroupStore

pytestmark = pytest.mark.timeout(20)

SESSION = 6000
REBALANCE = 20000
RETENTION = 60_000
CHECK_INTERVAL = 1000
G = "g"


def subscription(*topics: str, owned: bytes = b"") -> bytes:
    out = struct.pack(">hi", 1 if owned else 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1) + owned


class FlakyStore(GroupStore):
    """The real store, except that writes can be made to fail as an outage would."""

    def __init__(self, meta) -> None:
        super().__init__(meta)
        self.down = False

    async def save(self, record, previous):
        if self.down:
            raise Unavailable("store is down")
        return await super().save(record, previous)


@pytest.fixture
async def meta(tmp_path: Path):
    store = await SqliteMetaStore.open(tmp_path / "meta.db")
    await store.ensure(create=True)
    yield store
    await store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(meta) -> FlakyStore:
    return FlakyStore(meta)


@pytest.fixture
async def coord(store, clock):
    c = GroupCoordinator(store, clock, initial_rebalance_delay_ms=0, offsets_retention_ms=RETENTION,
                         offsets_retention_check_interval_ms=CHECK_INTERVAL)
    yield c
    await c.stop()


def join(c: GroupCoordinator, member_id: str = "", *, protocols=None, instance: str | None = None,
         client: str = "c", session: int = SESSION, protocol_type: str = "consumer",
         require_known: bool = False) -> asyncio.Task:
    return asyncio.ensure_future(c.join(
        group_id=G, member_id=member_id, instance_id=instance, client_id=client, client_host="/127.0.0.1",
        session_timeout_ms=session, rebalance_timeout_ms=REBALANCE, protocol_type=protocol_type,
        protocols=protocols or [("range", subscription("t"))], require_known_member=require_known))


async def until(predicate, what: str) -> None:
    """Let the coordinator's store I/O (on SQLite's thread) run until ``predicate`` holds."""
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def joined(c: GroupCoordinator, n: int):
    """Predicate: ``n`` members are parked in JoinGroup, waiting for the rebalance to complete."""
    def check() -> bool:
        group = c.groups.get(G)
        return group is not None and sum(m.join_future is not None for m in group.members.values()) == n
    return check


async def sync(c: GroupCoordinator, r: JoinResult, assignments: dict[str, bytes] | None = None,
               instance: str | None = None):
    return await c.sync(group_id=G, generation=r.generation, member_id=r.member_id, instance_id=instance,
                        protocol_type=None, protocol=None, assignments=list((assignments or {}).items()))


async def heartbeat(c: GroupCoordinator, r: JoinResult, instance: str | None = None) -> int:
    return await c.heartbeat(group_id=G, generation=r.generation, member_id=r.member_id, instance_id=instance)


async def commit(c: GroupCoordinator, generation: int, member_id: str, offset: int = 1, *, topic: str = "t",
                 partition: int = 0, instance: str | None = None) -> int:
    """Commits as the OffsetCommit handler does, stamped with the coordinator's clock."""
    return await c.commit_offsets(group_id=G, generation=generation, member_id=member_id, instance_id=instance,
                                  offsets=[CommittedOffset(topic, partition, offset, None, -1, c.clock.now_ms())])


async def stable_pair(c: GroupCoordinator, *, b_instance: str | None = None,
                      b_session: int = SESSION) -> tuple[JoinResult, JoinResult]:
    """Members a (the leader) and b in a Stable group."""
    a = await join(c, client="a")
    tb = join(c, client="b", instance=b_instance, session=b_session)
    await until(joined(c, 1), "b waiting to join")
    a, b = await join(c, a.member_id, client="a"), await tb
    assert a.error == b.error == 0 and a.generation == b.generation and a.leader == a.member_id
    plan = {a.member_id: b"A", b.member_id: b"B"}
    sa, sb = await asyncio.gather(sync(c, a, plan), sync(c, b, instance=b_instance))
    assert (sa.assignment, sb.assignment) == (b"A", b"B")
    assert c.groups[G].state == STABLE
    return a, b


# --- joining ----------------------------------------------------------------------------------------------------
async def test_first_rebalance_settles_on_the_one_protocol_every_member_supports(store, clock):
    c = GroupCoordinator(store, clock, initial_rebalance_delay_ms=300)
    first = join(c, protocols=[("range", b""), ("roundrobin", b"")], client="librdkafka")
    second = join(c, protocols=[("roundrobin", b"")], client="aiokafka")
    await until(joined(c, 2), "both members waiting to join")
    assert not first.done() and not second.done(), "the initial delay gathers the first members"
    clock.advance(300)
    await c.run_maintenance()
    a, b = await first, await second
    assert a.error == b.error == ErrorCode.NONE
    assert a.protocol == b.protocol == "roundrobin"
    await c.stop()


async def test_member_without_a_shared_protocol_is_refused(coord):
    await join(coord, protocols=[("range", b"")])
    refused = await join(coord, protocols=[("cooperative-sticky", b"")])
    assert refused.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    other_type = await join(coord, protocols=[("range", b"")], protocol_type="connect")
    assert other_type.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


async def test_new_member_must_come_back_with_its_member_id(coord):
    first = await join(coord, require_known=True)
    assert first.error == ErrorCode.MEMBER_ID_REQUIRED and first.member_id
    joined = await join(coord, first.member_id, require_known=True)
    assert joined.error == ErrorCode.NONE and joined.member_id == first.member_id


async def test_member_id_handed_out_but_never_used_does_not_hold_up_a_rebalance(coord):
    a, b = await stable_pair(coord)
    pending = await join(coord, require_known=True)
    assert pending.error == ErrorCode.MEMBER_ID_REQUIRED
    rejoin_a, rejoin_b = join(coord, a.member_id), join(coord, b.member_id)
    await until(joined(coord, 2), "both members waiting to join")
    # Still waiting for the pending member ... until it leaves without ever joining.
    assert not rejoin_a.done()
    _, errors = await coord.leave(group_id=G, members=[(pending.member_id, None)])
    assert errors == [ErrorCode.NONE]
    assert (await rejoin_a).error == (await rejoin_b).error == ErrorCode.NONE


async def test_every_generation_is_stored_before_members_hear_of_it(coord, store):
    a, b = await stable_pair(coord)
    assert (await store.load(G)).generation == a.generation
    rejoined = await asyncio.gather(join(coord, a.member_id), join(coord, b.member_id))
    assert {r.generation for r in rejoined} == {a.generation + 1}
    assert (await store.load(G)).generation == a.generation + 1


async def test_a_generation_that_cannot_be_stored_is_not_announced(coord, store):
    a, b = await stable_pair(coord)
    store.down = True
    ta, tb = join(coord, a.member_id), join(coord, b.member_id)
    await until(joined(coord, 2), "both members waiting to join")
    assert not ta.done() and not tb.done()
    assert coord.groups[G].state == PREPARING and coord.groups[G].generation == a.generation
    assert await commit(coord, a.generation, a.member_id) == ErrorCode.NONE, "the old generation still commits"
    store.down = False
    await coord.run_maintenance()
    ra, rb = await ta, await tb
    assert ra.error == rb.error == ErrorCode.NONE and ra.generation == a.generation + 1
    assert (await store.load(G)).generation == ra.generation


# --- liveness -------------------------------------------------------------------------------------------------------
async def test_silent_member_is_removed_after_its_session_timeout(coord, clock):
    a, b = await stable_pair(coord)
    clock.advance(SESSION - 100)
    assert await heartbeat(coord, a) == ErrorCode.NONE
    clock.advance(200)
    await coord.run_maintenance()
    assert b.member_id not in coord.groups[G].members
    assert await heartbeat(coord, a) == ErrorCode.REBALANCE_IN_PROGRESS
    again = await join(coord, a.member_id)
    assert again.error == ErrorCode.NONE and again.generation == a.generation + 1 and len(again.members) == 1


async def test_member_that_dies_during_a_rebalance_is_dropped_at_its_session_timeout(coord, clock):
    """Not at the (much longer) rebalance timeout: a crash during a rebalance must not stall the group."""
    a, b = await stable_pair(coord)
    newcomer = join(coord, client="c")
    rejoin_a = join(coord, a.member_id)
    await until(joined(coord, 2), "both members waiting to join")
    assert coord.groups[G].state == PREPARING
    clock.advance(SESSION + 1)  # b never rejoins nor heartbeats
    await coord.run_maintenance()
    ra, rc = await rejoin_a, await newcomer
    assert ra.error == rc.error == ErrorCode.NONE
    assert {m for m, _, _ in ra.members} == {a.member_id, rc.member_id}
    assert SESSION + 1 < REBALANCE


async def test_members_awaiting_answers_are_alive(coord, clock):
    a, b = await stable_pair(coord)
    rejoin_a = join(coord, a.member_id)
    await until(joined(coord, 1), "a waiting to join")
    clock.advance(SESSION // 2)
    assert await heartbeat(coord, b) == ErrorCode.REBALANCE_IN_PROGRESS
    rejoin_b = join(coord, b.member_id)
    ra, rb = await rejoin_a, await rejoin_b
    # b sends SyncGroup at once and waits for the leader, which is slow (but heartbeats).
    waiting = asyncio.ensure_future(sync(coord, rb))
    await until(lambda: coord.groups[G].members[rb.member_id].sync_future is not None, "b waiting in sync")
    for _ in range(3):
        clock.advance(SESSION // 2)
        assert await heartbeat(coord, ra) == ErrorCode.NONE
        await coord.run_maintenance()
    assert b.member_id in coord.groups[G].members
    await sync(coord, ra, {ra.member_id: b"A", rb.member_id: b"B"})
    assert (await waiting).assignment == b"B"


# --- static membership ----------------------------------------------------------------------------------------------
async def test_static_member_rejoins_in_place_and_fences_its_old_self(coord, store):
    a, b = await stable_pair(coord, b_instance="i-b")
    generation = (await store.load(G)).generation
    # The restarted process sends new metadata (e.g. owned partitions) but the same protocol.
    back = await join(coord, instance="i-b", protocols=[("range", subscription("t", owned=b"\x00\x00\x00\x00"))])
    assert back.error == ErrorCode.NONE and back.generation == a.generation and back.member_id != b.member_id
    assert coord.groups[G].state == STABLE and (await store.load(G)).generation == generation
    assert (await sync(coord, back, instance="i-b")).assignment == b"B"
    assert await heartbeat(coord, a) == ErrorCode.NONE, "the other member is not disturbed"
    assert await heartbeat(coord, b, instance="i-b") == ErrorCode.FENCED_INSTANCE_ID
    assert await commit(coord, b.generation, b.member_id, instance="i-b") == ErrorCode.FENCED_INSTANCE_ID


async def test_static_member_that_misses_a_rebalance_keeps_its_place(coord, clock):
    """Only its session timeout removes a static member, so a bounce shorter than that moves nothing."""
    a, b = await stable_pair(coord, b_instance="i-b", b_session=REBALANCE * 2)
    rejoin_a = join(coord, a.member_id)
    await until(joined(coord, 1), "a waiting to join")
    clock.advance(REBALANCE + 1)
    await coord.run_maintenance()
    ra = await rejoin_a
    assert ra.error == ErrorCode.NONE
    assert {m for m, _, _ in ra.members} == {a.member_id, b.member_id}, "the leader still assigns to it"


# --- commits --------------------------------------------------------------------------------------------------------
async def test_commit_validation_follows_kafka(coord, store):
    a, b = await stable_pair(coord, b_instance="i-b")
    assert await commit(coord, a.generation, a.member_id, 5) == ErrorCode.NONE
    assert await commit(coord, a.generation - 1, a.member_id) == ErrorCode.ILLEGAL_GENERATION
    assert await commit(coord, a.generation + 1, a.member_id) == ErrorCode.ILLEGAL_GENERATION
    assert await commit(coord, a.generation, "ghost") == ErrorCode.UNKNOWN_MEMBER_ID
    assert await commit(coord, -1, "") == ErrorCode.UNKNOWN_MEMBER_ID
    assert await commit(coord, -1, a.member_id) == ErrorCode.ILLEGAL_GENERATION
    assert await commit(coord, a.generation, a.member_id, instance="i-b") == ErrorCode.FENCED_INSTANCE_ID
    ta, tb = join(coord, a.member_id), join(coord, b.member_id, instance="i-b")
    ra, _ = await ta, await tb
    assert coord.groups[G].state == COMPLETING
    assert await commit(coord, ra.generation, ra.member_id) == ErrorCode.REBALANCE_IN_PROGRESS
    assert {k: o.offset for k, o in (await coord.fetch_offsets(G)).items()} == {("t", 0): 5}


async def test_commit_from_outside_the_group_only_while_it_is_empty(coord):
    assert await commit(coord, -1, "", 3) == ErrorCode.NONE
    a = await join(coord)
    assert await commit(coord, -1, "", 4) == ErrorCode.UNKNOWN_MEMBER_ID
    await coord.leave(group_id=G, members=[(a.member_id, None)])
    assert coord.groups[G].state == EMPTY
    assert await commit(coord, -1, "", 5) == ErrorCode.NONE
    assert (await coord.fetch_offsets(G))[("t", 0)].offset == 5


async def test_a_new_coordinator_fences_the_previous_ones_members(coord, store, clock):
    a, b = await stable_pair(coord)
    successor = GroupCoordinator(store, clock, initial_rebalance_delay_ms=0)
    assert await commit(successor, a.generation, a.member_id) == ErrorCode.UNKNOWN_MEMBER_ID
    assert (await store.load(G)).generation > a.generation
    with pytest.raises(GenerationFenced):
        await store.commit(G, a.generation, [CommittedOffset("t", 0, 9, None, -1, 0)])
    assert await commit(coord, a.generation, a.member_id, 9) == ErrorCode.ILLEGAL_GENERATION, \
        "the old coordinator's own check passes, the stored generation does not"
    await successor.stop()


async def test_stopping_answers_waiting_joins_with_not_coordinator(coord):
    a, b = await stable_pair(coord)
    waiting = join(coord, a.member_id)
    await until(joined(coord, 1), "a waiting to join")
    await coord.stop()
    assert (await waiting).error == ErrorCode.NOT_COORDINATOR
    assert await heartbeat(coord, b) == ErrorCode.NOT_COORDINATOR


# --- offset deletion and expiry -------------------------------------------------------------------------------------
async def test_offset_delete_spares_subscribed_topics_while_members_exist(coord):
    a, _ = await stable_pair(coord)
    assert await commit(coord, a.generation, a.member_id, topic="t") == ErrorCode.NONE
    assert await commit(coord, a.generation, a.member_id, topic="old") == ErrorCode.NONE
    error, errors = await coord.delete_offsets(G, [("t", 0), ("old", 0)])
    assert (error, errors) == (ErrorCode.NONE, {("t", 0): ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC,
                                                ("old", 0): ErrorCode.NONE})
    assert set(await coord.fetch_offsets(G)) == {("t", 0)}
    assert await coord.delete_offsets("nobody", [("t", 0)]) == (ErrorCode.GROUP_ID_NOT_FOUND, {})


async def test_offset_delete_refuses_non_consumer_groups_with_members(coord):
    await join(coord, protocol_type="connect", protocols=[("v1", b"")])
    assert await coord.delete_offsets(G, [("t", 0)]) == (ErrorCode.NON_EMPTY_GROUP, {})


async def test_offsets_of_an_emptied_group_expire_a_retention_after_it_emptied(coord, clock):
    a = await join(coord)
    await sync(coord, a, {a.member_id: b"A"})
    assert await commit(coord, a.generation, a.member_id, 7) == ErrorCode.NONE
    clock.advance(RETENTION * 2)  # an active group's offsets never expire, however old
    assert (await coord.fetch_offsets(G))[("t", 0)].offset == 7
    await coord.leave(group_id=G, members=[(a.member_id, None)])
    clock.advance(RETENTION - 1)
    await coord.run_maintenance()
    assert set(await coord.fetch_offsets(G)) == {("t", 0)}
    assert [g.name for g in await coord.list_groups()] == [G]
    clock.advance(1)
    assert await coord.fetch_offsets(G) == {}, "fetch never returns an expired offset"
    clock.advance(CHECK_INTERVAL)
    await coord.run_maintenance()
    assert await coord.store.offsets(G) == [], "the sweep deletes them"
    assert await coord.list_groups() == [], "and the empty group with them"


async def test_offsets_committed_from_outside_a_group_expire_by_their_own_commit_time(coord, clock):
    assert await commit(coord, -1, "", 1, partition=0) == ErrorCode.NONE
    clock.advance(RETENTION // 2)
    assert await commit(coord, -1, "", 1, partition=1) == ErrorCode.NONE
    clock.advance(RETENTION // 2)
    await coord.run_maintenance()
    assert set(await coord.fetch_offsets(G)) == {("t", 1)}
    assert [(o.topic, o.partition) for o in await coord.store.offsets(G)] == [("t", 1)]


async def test_stable_group_loses_only_offsets_of_topics_it_no_longer_reads(coord, clock):
    a = await join(coord, protocols=[("range", subscription("t"))])
    await sync(coord, a, {a.member_id: b"A"})
    assert await commit(coord, a.generation, a.member_id, topic="t") == ErrorCode.NONE
    assert await commit(coord, a.generation, a.member_id, topic="gone") == ErrorCode.NONE
    clock.advance(RETENTION)
    assert await heartbeat(coord, a) == ErrorCode.NONE
    await coord.run_maintenance()
    assert set(await coord.fetch_offsets(G)) == {("t", 0)}


# --- several brokers on one store --------------------------------------------------------------------------------
async def test_forgotten_group_sends_its_members_to_the_new_coordinator(coord):
    a, b = await stable_pair(coord)
    waiting = join(coord, a.member_id)
    await until(joined(coord, 1), "a waiting to join")
    await coord.forget(lambda name: name == G)
    assert (await waiting).error == ErrorCode.NOT_COORDINATOR
    assert G not in coord.groups


async def test_other_brokers_neither_load_nor_fence_a_group_they_do_not_coordinate(coord, store, clock):
    a, b = await stable_pair(coord)
    stored = await store.load(G)
    other = GroupCoordinator(store, clock, offsets_retention_ms=RETENTION, offsets_retention_check_interval_ms=1)
    assert await other.list_groups(lambda name: name != G) == []
    clock.advance(RETENTION * 2)
    assert await heartbeat(coord, a) == await heartbeat(coord, b) == ErrorCode.NONE
    await other.run_maintenance()  # its offset-expiry sweep reads every stored group
    assert G not in other.groups
    assert (await store.load(G)).version == stored.version, "the owner's group was not touched"
    assert await commit(coord, a.generation, a.member_id) == ErrorCode.NONE
    await other.stop()


async def test_any_broker_sweeps_expired_offsets_of_an_empty_group_it_never_loaded(coord, store, clock):
    assert await commit(coord, -1, "", 3) == ErrorCode.NONE
    other = GroupCoordinator(store, clock, offsets_retention_ms=RETENTION, offsets_retention_check_interval_ms=1)
    clock.advance(RETENTION)
    await other.run_maintenance()
    assert G not in other.groups
    assert await store.offsets(G) == [] and await store.list_names() == []
    await other.stop()
