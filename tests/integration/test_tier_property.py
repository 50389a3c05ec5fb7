"""Properties of tiering and GC over random produce histories (embedded store).

* Consuming before and after tiering gives identical records, whatever the
  history: partitions, batch shapes, keys, null values, headers,
  timestamps, checkpoints, graceful restarts and crashes, and two tierers
  racing each other.
* Every tier object is a plain Avro file.
* GC never deletes a referenced object: over random interleavings of
  commits, checkpoints, tiering and sweeps (grace 0, so anything
  unreferenced goes at once), every offset below the high watermark stays
  readable after each sweep, and what is left at the end is referenced.
"""

from __future__ import annotations

import asyncio
import io

import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.storage import keys
from tidelog.storage.clock import SystemClock
from tidelog.storage.index_objects import decode_index
from tidelog.storage.maintenance import Maintenance, MaintenanceConfig
from tidelog.storage.reader import LogReader
from tidelog.storage.records import Record
from tidelog.storage.tiering import Tierer, TierPolicy

from tests.integration.test_tier_harness import History, embedded, read_log

PARTITIONS = 3

records = st.builds(
    Record,
    offset=st.just(0),
    timestamp=st.integers(0, 2**41),
    key=st.none() | st.binary(max_size=8),
    value=st.none() | st.binary(max_size=200),
    headers=st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=4)), max_size=2).map(tuple),
)
batches = st.lists(st.lists(records, min_size=1, max_size=6), min_size=1, max_size=3)
writes = st.dictionaries(st.integers(0, PARTITIONS - 1), batches, min_size=1, max_size=PARTITIONS)
history_ops = st.one_of(
    st.tuples(st.just("flush"), writes),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("restart")),
    st.tuples(st.just("crash")),
)
gc_ops = st.one_of(
    st.tuples(st.just("flush"), writes),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("crash")),
    st.tuples(st.just("tier"), st.sampled_from([1, 600, 5000])),
    st.tuples(st.just("sweep")),
)


async def apply(history: History, op: tuple) -> None:
    kind = op[0]
    if kind == "flush":
        await history.flush({("t", p): bs for p, bs in op[1].items()})
    elif kind == "checkpoint":
        await history.checkpoint()
    elif kind == "restart":
        await history.release_all()
        await history.start_session()
        await history.reacquire_all()
    elif kind == "crash":  # no release: the next session recovers from checkpoints and the commit log
        await history.start_session()
        await history.reacquire_all()


async def read_everything(history: History, storage) -> dict[int, list[Record]]:
    reader = LogReader(storage.objects, storage.meta)  # fresh: no cache hides a deleted object
    out = {}
    for p in range(PARTITIONS):
        led = history.led[("t", p)]
        out[p] = await read_log(reader, led.topic.topic_id, p, 0, led.next_offset, led.refs)
    return out


def expected(history: History) -> dict[int, list[Record]]:
    return {p: history.expected[("t", p)] for p in range(PARTITIONS)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(history_ops, min_size=1, max_size=14), target=st.sampled_from([1, 300, 3000, 1 << 26]),
       codec=st.sampled_from(["zstandard", "snappy"]), racers=st.integers(1, 2))
def test_consuming_before_and_after_tiering_is_identical(ops, target, codec, racers) -> None:
    async def scenario() -> None:
        async with embedded() as storage:
            clock = SystemClock()
            history = History(storage, clock)
            await history.start_session()
            await history.create("t", PARTITIONS)
            for op in ops:
                await apply(history, op)
            before = await read_everything(history, storage)
            assert before == expected(history)

            policy = TierPolicy(target_bytes=target, codec=codec, max_wait_ms=0, chunk_bytes=512)
            tierers = [Tierer(storage.objects, storage.meta, clock, policy) for _ in range(racers)]
            topic = await history.catalog.require("t")
            results = await asyncio.gather(*(t.tier_partition(topic, p) for t in tierers for p in range(PARTITIONS)))
            for p in range(PARTITIONS):
                newest = await storage.meta.query(keys.partition_pk(topic.topic_id, p), prefix=keys.CHECKPOINT_PREFIX,
                                                  reverse=True, limit=1)
                checkpointed = int(newest[0].attrs["end"])
                tiered = [s for r in results if r.partition == p for s in range(r.segments)]
                assert bool(tiered) == (checkpointed > 0)
            assert await read_everything(history, storage) == before

            async for info in storage.objects.list(keys.TIER_ROOT):
                plain = list(fastavro.reader(io.BytesIO(await storage.objects.get(info.key))))
                assert plain and all(set(r) == {"offset", "timestamp", "key", "value", "headers"} for r in plain)
    asyncio.run(scenario())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(gc_ops, min_size=1, max_size=16))
def test_gc_never_deletes_what_a_reader_needs(ops) -> None:
    async def scenario() -> None:
        async with embedded() as storage:
            clock = SystemClock()
            history = History(storage, clock)
            await history.start_session()
            await history.create("t", PARTITIONS)
            config = MaintenanceConfig.from_options({"max_wait_ms": 0, "grace_ms": 0, "min_age_ms": 0})
            for op in ops:
                if op[0] == "tier":
                    config = MaintenanceConfig.from_options({"max_wait_ms": 0, "grace_ms": 0, "min_age_ms": 0,
                                                             "target_bytes": op[1]})
                    await Maintenance(storage.objects, storage.meta, clock, config).run("tier")
                elif op[0] == "sweep":
                    await Maintenance(storage.objects, storage.meta, clock, config).run("gc")
                    assert await read_everything(history, storage) == expected(history)
                else:
                    await apply(history, op)
            # Finish: tier what is checkpointed and sweep until nothing more goes; nothing referenced is lost...
            maintenance = Maintenance(storage.objects, storage.meta, clock, config)
            for round_ in range(2):  # the live session's data spans several checkpoints
                await apply(history, ("flush", {p: [[Record(0, round_, b"k", b"end")]] for p in range(PARTITIONS)}))
                await history.checkpoint()
            await maintenance.run("tier")
            for _ in range(2):
                await maintenance.run("gc")
            assert await read_everything(history, storage) == expected(history)
            # ...and what is left is referenced (at most the live session's latest flush awaits proof).
            leftovers = await unreferenced(storage)
            assert not [k for k in leftovers if not k.startswith(keys.INGEST_ROOT)]
            assert len(leftovers) <= 1
    asyncio.run(scenario())


async def unreferenced(storage) -> list[str]:
    referenced: set[str] = set()
    for lease in await storage.meta.query(keys.LEASES_PK):
        pk = keys.partition_pk(lease.attrs["topic_id"], lease.attrs["partition"])
        for item in await storage.meta.query(pk):
            if item.sk.startswith(keys.TIER_PREFIX) and item.get("object"):
                referenced.add(item.attrs["object"])
            if item.sk.startswith(keys.CHECKPOINT_PREFIX) and item.get("index"):
                referenced.add(item.attrs["index"])
                index = decode_index(await storage.objects.get(item.attrs["index"]))
                referenced.update(r.object_key for r in index.get((lease.attrs["topic_id"],
                                                                    lease.attrs["partition"]), []))
    for broker in await storage.meta.query(keys.BROKERS_PK):
        session = keys.session_name(broker.attrs["node_id"], broker.attrs["epoch"])
        for item in await storage.meta.query(keys.commit_log_pk(session)):
            if item.get("object"):
                referenced.add(item.attrs["object"])
    out = []
    for root in (keys.INGEST_ROOT, keys.INDEX_ROOT, keys.TIER_ROOT):
        out += [info.key async for info in storage.objects.list(root) if info.key not in referenced]
    return out
