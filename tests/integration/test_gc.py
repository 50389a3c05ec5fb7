"""`find_orphans` on every backend: exactly the ingest objects no commit references or ever can."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from tidelog.storage import keys
from tidelog.storage.conditions import ABSENT, Put
from tidelog.storage.factory import Storage
from tidelog.storage.gc import find_orphans, parse_ingest_key
from tidelog.storage.model import Item
from tidelog.storage.sessions import BrokerInfo, Session, fence, view_of
from tests.support.stores import storage  # noqa: F401 - a fixture

FAR_FUTURE = 2**50


async def register(meta, node: int) -> Session:
    return await Session.register(meta, BrokerInfo(node, "127.0.0.1", 9000 + node), 0)


async def flush(storage: Storage, session: str, seq: int, outcome: str) -> str:
    """An ingest object at ``seq`` whose commit ``outcome`` is "committed", "void" or "none"."""
    key = keys.ingest_object_key(session, seq)
    await storage.objects.put_if_absent(key, b"segment bytes")
    pk, sk = keys.commit_log_pk(session), keys.commit_log_sk(seq)
    if outcome == "committed":
        await storage.meta.write([Put(Item(pk, sk, {"object": key, "size": 13, "partitions": 1}), ABSENT)])
    elif outcome == "void":
        await storage.meta.write([Put(Item(pk, sk, {"void": True}), ABSENT)])
    return key


async def test_orphans_are_exactly_the_unreferenced_objects_that_can_never_commit(storage: Storage) -> None:
    live = await register(storage.meta, 1)
    a = live.name
    committed = [await flush(storage, a, 0, "committed"), await flush(storage, a, 2, "committed")]
    skipped = await flush(storage, a, 1, "none")  # a later seq is settled: this attempt is over
    voided = await flush(storage, a, 3, "void")
    in_flight = await flush(storage, a, 4, "none")  # the live session may still commit it

    fenced = await register(storage.meta, 2)
    committed.append(await flush(storage, fenced.name, 0, "committed"))
    dead_fenced = await flush(storage, fenced.name, 1, "none")
    assert await fence(storage.meta, view_of(await storage.meta.get(keys.BROKERS_PK, keys.broker_sk(2))))

    closed = await register(storage.meta, 3)
    dead_closed = await flush(storage, closed.name, 0, "none")
    await closed.close()

    restarted = await register(storage.meta, 4)
    dead_restarted = await flush(storage, restarted.name, 0, "none")
    await register(storage.meta, 4)  # a new run of node 4 ends the old session

    await storage.objects.put_if_absent("ingest/notes.txt", b"not ours")
    await storage.objects.put_if_absent("ingest/1-1/7.avro", b"unpadded: not our spelling")

    found = await find_orphans(storage.objects, storage.meta, older_than_ms=0, now_ms=FAR_FUTURE)
    assert found == sorted([skipped, voided, dead_fenced, dead_closed, dead_restarted])
    assert in_flight not in found and not set(found) & set(committed)
    # Objects younger than the grace period are left alone.
    assert await find_orphans(storage.objects, storage.meta, older_than_ms=FAR_FUTURE, now_ms=FAR_FUTURE) == []


def test_parse_ingest_key_accepts_only_keys_tidelog_writes() -> None:
    parsed = parse_ingest_key(keys.ingest_object_key("12-3", 45))
    assert (parsed.session, parsed.node_id, parsed.epoch, parsed.seq) == ("12-3", 12, 3, 45)
    for key in ("ingest/12-3/45.avro", "ingest/x-3/000000000045.avro", "index/1-1/000000000000.avro",
                "ingest/1-1/000000000000.json", "ingest/000000000000.avro"):
        assert parse_ingest_key(key) is None, key


OUTCOMES = st.sampled_from(["committed", "void", "none"])
HISTORY = st.lists(st.tuples(st.lists(OUTCOMES, min_size=1, max_size=6), st.sampled_from(["live", "fenced", "closed"])),
                   min_size=1, max_size=3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HISTORY)
def test_a_referenced_object_is_never_an_orphan_and_every_provable_orphan_is_found(history) -> None:
    from tidelog.storage.adapters.localdir import LocalObjectStore
    from tidelog.storage.adapters.sqlite import SqliteMetaStore

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = Storage(await LocalObjectStore.open(Path(tmp) / "o"), await SqliteMetaStore.open(Path(tmp) / "m.db"))
            await store.ensure(create=True)
            try:
                referenced, expected = set(), set()
                for node, (outcomes, fate) in enumerate(history):
                    session = await register(store.meta, node)
                    settled_up_to = max((i for i, o in enumerate(outcomes) if o != "none"), default=-1)
                    for seq, outcome in enumerate(outcomes):
                        key = await flush(store, session.name, seq, outcome)
                        if outcome == "committed":
                            referenced.add(key)
                        elif outcome == "void" or fate != "live" or seq < settled_up_to:
                            expected.add(key)
                    if fate == "fenced":
                        assert await fence(store.meta, view_of(await store.meta.get(keys.BROKERS_PK,
                                                                                     keys.broker_sk(node))))
                    elif fate == "closed":
                        await session.close()
                found = set(await find_orphans(store.objects, store.meta, older_than_ms=0, now_ms=FAR_FUTURE))
                assert not found & referenced
                assert found == expected
            finally:
                await store.close()
    asyncio.run(run())
