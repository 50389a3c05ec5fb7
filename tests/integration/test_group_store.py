"""The group store's fence, on every metadata adapter (SQLite, and DynamoDB on moto).

An offset commit is one conditional write that checks the stored generation,
so a member of an old generation cannot move an offset whichever coordinator
it reaches.  These tests check that a stale commit raises `GenerationFenced`
and writes nothing at all, in one batch or several.
"""

from __future__ import annotations

import pytest

from tidelog.storage.errors import Conflict
from tidelog.storage.groups import CommittedOffset, GenerationFenced, GroupRecord, GroupStore

G = "orders"


def offsets(n: int, value: int, commit_ms: int = 1) -> list[CommittedOffset]:
    return [CommittedOffset("t", p, value, "m", -1, commit_ms) for p in range(n)]


async def generations(store: GroupStore, upto: int, members: int = 2) -> GroupRecord:
    record = None
    for generation in range(1, upto + 1):
        record = await store.save(GroupRecord(G, generation, "consumer", "range", "leader", members, None, 0), record)
    return record


async def committed(store: GroupStore) -> dict[tuple[str, int], int]:
    return {(o.topic, o.partition): o.offset for o in await store.offsets(G)}


async def test_commit_of_the_stored_generation_is_written(meta_store):
    store = GroupStore(meta_store)
    await generations(store, 3)
    await store.commit(G, 3, offsets(4, 10))
    assert await committed(store) == {("t", p): 10 for p in range(4)}


@pytest.mark.parametrize("partitions", [1, 101], ids=["one-write", "several-writes"])
async def test_stale_generation_is_fenced_and_writes_nothing(meta_store, partitions):
    store = GroupStore(meta_store)
    await generations(store, 2)
    await store.commit(G, 2, offsets(partitions, 10))
    await generations_after(store, 2)
    for stale in (0, 2, 4, 1_000):
        with pytest.raises(GenerationFenced) as fenced:
            await store.commit(G, stale, offsets(partitions, 5))
        assert fenced.value.kafka_code == 22
    assert await committed(store) == {("t", p): 10 for p in range(partitions)}
    assert (await store.load(G)).generation == 3


async def generations_after(store: GroupStore, current: int) -> None:
    record = await store.load(G)
    await store.save(GroupRecord(G, current + 1, "consumer", "range", "leader", 2, None, 0), record)


async def test_commit_without_a_generation_is_fenced_while_the_group_has_members(meta_store):
    store = GroupStore(meta_store)
    await generations(store, 1, members=1)
    with pytest.raises(GenerationFenced):
        await store.commit(G, -1, offsets(2, 5))
    assert await committed(store) == {}
    record = await store.load(G)
    await store.save(GroupRecord(G, 2, "consumer", None, None, 0, 123, 0), record)
    await store.commit(G, -1, offsets(2, 5))
    assert await committed(store) == {("t", 0): 5, ("t", 1): 5}


async def test_commit_without_a_generation_creates_a_listable_group(meta_store):
    store = GroupStore(meta_store)
    await store.commit(G, -1, offsets(1, 7, commit_ms=42))
    assert await store.list_names() == [G]
    record = await store.load(G)
    assert (record.generation, record.members, record.empty_since_ms) == (0, 0, 42)
    with pytest.raises(GenerationFenced):
        await store.commit(G, 1, offsets(1, 8))
    assert await committed(store) == {("t", 0): 7}


async def test_two_coordinators_cannot_both_store_the_next_generation(meta_store):
    store = GroupStore(meta_store)
    seen = await generations(store, 1)
    await store.save(GroupRecord(G, 2, "consumer", "range", "a", 1, None, 0), seen)
    with pytest.raises(Conflict):
        await store.save(GroupRecord(G, 2, "consumer", "range", "b", 1, None, 0), seen)
    assert (await store.load(G)).leader == "a"


async def test_expiry_spares_an_offset_recommitted_since_it_was_judged(meta_store):
    store = GroupStore(meta_store)
    await store.commit(G, -1, offsets(2, 5, commit_ms=1))
    judged = await store.offsets(G)
    await store.commit(G, -1, [CommittedOffset("t", 1, 6, "m", -1, 2)])
    assert await store.expire_offsets(G, [judged[0]]) == 1
    assert await store.expire_offsets(G, [judged[1]]) == 0
    assert await committed(store) == {("t", 1): 6}
