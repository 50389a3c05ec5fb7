"""Storage-core commit cost: metadata write units per flush at 1 to 1,000 partitions, fencing kept.

Target: 20 DynamoDB write units or fewer per flush, amortised, at 1,000
active partitions, with every commit still conditioned on the broker's
session (per-partition fencing through the lease).

This drives the real storage services with no broker in front of them:
`Session.register`, `LogWriter.acquire` for every partition, then flushes in
which every partition gets one small idempotent batch (`LogWriter.commit`),
and a checkpoint of every partition when the broker's own rule
(``broker.logs.checkpoint_due``: the interval has passed and the flushes since
the last checkpoint carry its write units within budget) says so, built
exactly as the broker's ``LogManager._checkpoint`` builds it.  Time is
simulated: at 25 flushes/s and a 10 s checkpoint interval a checkpoint
follows every 250 flushes; at 4 flushes/s and 1,000 partitions the budget
stretches that from 40 to 84 flushes.  Write units come from the
adapters' own ``stats`` (the DynamoDB rules in ``storage/cost.py``), so the
embedded store predicts the DynamoDB bill and moto confirms it over HTTP.

moto's TransactWriteItems deep-copies the whole table once per operation
in the transaction (moto/dynamodb/models/__init__.py, for rollback), so on
moto every acquire and commit costs time proportional to the table size:
acquiring 1,000 partitions took 450 s.  Its latencies say nothing about
DynamoDB; its unit counts match the embedded store's.  The moto backend
therefore runs ``--moto-partitions`` (default 1 and 100; 1 with ``--quick``).

After the measured flushes it commits K more without a checkpoint and
recovers single partitions with `recover_tail`, as a new owner would, to
show what a takeover reads.

Run: ``python tests/benchmarks/bench_commit.py [--quick] [--backends embedded,moto]
[--partitions 1,100,1000] [--rates 4,25] [--json out.json]``.
Prints numbers; it asserts nothing about time.  Its only failures are
wrong results (a recovered partition that does not match what was committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import crc32c

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests.support` importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.moto_server import MotoServer  # noqa: E402
from tidelog.broker.logs import checkpoint_due  # noqa: E402
from tidelog.storage import keys  # noqa: E402
from tidelog.storage.clock import SYSTEM_CLOCK  # noqa: E402
from tidelog.storage.cost import item_size, write_units  # noqa: E402
from tidelog.storage.model import Item, SegmentRef  # noqa: E402
from tidelog.storage.partition_log import (  # noqa: E402
    CheckpointInput,
    FlushGroup,
    HeaderCache,
    LogWriter,
    PartitionLease,
    recover_tail,
)
from tidelog.storage.producers import BatchSeq, ProducerStates  # noqa: E402
from tidelog.storage.records import CRC_START, Record, build_batches, patch_batch  # noqa: E402
from tidelog.storage.segments import BatchEntry  # noqa: E402
from tidelog.storage.sessions import BrokerInfo, Session  # noqa: E402

TARGET_WU_PER_FLUSH = 20
PRODUCER_ID = 4242
#: Byte positions of fields a producer sets and the broker never rewrites.
_SEQUENCE_AT = 53
_CRC_AT = 17
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
TOPIC = "bench"


# --------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------


@dataclass
class Counts:
    """Request counts and capacity units accumulated over one kind of work."""

    write_units: float = 0
    read_units: float = 0
    meta_requests: dict[str, int] = field(default_factory=dict)
    object_requests: dict[str, int] = field(default_factory=dict)

    def add(self, before: "Snapshot", after: "Snapshot") -> None:
        self.write_units += after.write_units - before.write_units
        self.read_units += after.read_units - before.read_units
        for mine, b, a in ((self.meta_requests, before.meta, after.meta), (self.object_requests, before.objects, after.objects)):
            for op, n in a.items():
                if n - b.get(op, 0):
                    mine[op] = mine.get(op, 0) + n - b.get(op, 0)


@dataclass
class Snapshot:
    write_units: float
    read_units: float
    meta: dict[str, int]
    objects: dict[str, int]

    @classmethod
    def of(cls, objects, meta) -> "Snapshot":
        return cls(meta.stats.write_units, meta.stats.read_units, dict(meta.stats.requests), dict(objects.stats.requests))


class ByteCountingObjects:
    """Wraps an object store to count the bytes GETs return (the stats count requests only)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.stats = inner.stats
        self.bytes_read = 0

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = await self.inner.get(key, start, end)
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


# --------------------------------------------------------------------------
# One simulated partition, kept the way broker/partition.py keeps it
# --------------------------------------------------------------------------


@dataclass
class SimPartition:
    topic_id: str
    lease: PartitionLease
    template: bytes
    next_offset: int
    max_timestamp: int
    producers: ProducerStates
    checkpoint_start: int
    refs: list[SegmentRef] = field(default_factory=list)
    sequence: int = 0
    pending: BatchSeq | None = None

    def next_entry(self) -> BatchEntry:
        """The next batch a producer would send, with the broker's offset and epoch patched in."""
        buf = bytearray(self.template)
        _INT32.pack_into(buf, _SEQUENCE_AT, self.sequence)
        _UINT32.pack_into(buf, _CRC_AT, crc32c.crc32c(memoryview(buf)[CRC_START:]))
        patch_batch(buf, 0, self.next_offset, self.lease.leader_epoch)
        entry = BatchEntry.from_batch(bytes(buf))
        self.pending = self.producers.append(PRODUCER_ID, 0, self.sequence, self.sequence,
                                             timestamp=entry.max_timestamp)
        self.sequence += 1
        return entry

    def committed(self, entry: BatchEntry, ref: SegmentRef) -> None:
        self.pending.base_offset = entry.base_offset
        self.pending.last_offset = entry.last_offset
        self.refs.append(ref)
        self.next_offset = entry.last_offset + 1
        self.max_timestamp = max(self.max_timestamp, entry.max_timestamp)

    def snapshot(self) -> CheckpointInput:
        return CheckpointInput(self.lease, self.checkpoint_start, self.next_offset, self.max_timestamp,
                               list(self.refs), self.producers)

    def checkpointed(self, snap: CheckpointInput) -> None:
        self.refs = self.refs[len(snap.refs):]
        self.checkpoint_start = snap.end_offset


def make_template(record_bytes: int) -> bytes:
    value = os.urandom(record_bytes)
    (batch,) = build_batches([Record(0, SYSTEM_CLOCK.now_ms(), None, value)],
                             producer_id=PRODUCER_ID, producer_epoch=0, base_sequence=0)
    return batch


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------


async def open_backend(kind: str, workdir: Path, moto_url: str | None):
    if kind == "embedded":
        from tidelog.storage.adapters.localdir import LocalObjectStore
        from tidelog.storage.adapters.sqlite import SqliteMetaStore

        objects = await LocalObjectStore.open(workdir / "objects")
        meta = await SqliteMetaStore.open(workdir / "metadata.sqlite3")
    else:
        from tidelog.storage.adapters.dynamodb import DynamoMetaStore
        from tidelog.storage.adapters.s3 import S3ObjectStore

        name = f"bench-commit-{uuid.uuid4().hex[:12]}"
        objects = await S3ObjectStore.open(name, endpoint_url=moto_url)
        meta = await DynamoMetaStore.open(name, endpoint_url=moto_url)
    await objects.ensure(create=True)
    await meta.ensure(create=True)
    return objects, meta


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


@dataclass
class RateResult:
    rate: float
    flushes_per_checkpoint: int
    flushes: int
    checkpoints: int
    commit_p50_ms: float
    commit_p99_ms: float
    checkpoint_mean_ms: float
    puts_per_flush: float
    commit_wu_per_flush: float
    checkpoint_wu_per_flush: float
    checkpoint_puts_per_flush: float

    @property
    def total_wu_per_flush(self) -> float:
        return self.commit_wu_per_flush + self.checkpoint_wu_per_flush


@dataclass
class RecoveryResult:
    flushes_since_checkpoint: int
    partitions_sampled: int
    read_units: float
    meta_requests: int
    gets: int
    mib_read: float
    seconds: float
    takeover_gets: int = 0
    takeover_mib_read: float = 0.0
    takeover_seconds: float = 0.0


@dataclass
class ScaleResult:
    backend: str
    partitions: int
    acquire_seconds: float
    acquire_wu: float
    rates: list[RateResult]
    recovery: RecoveryResult
    naive_single_wu: float
    naive_txn_wu: float


class Bench:
    def __init__(self, objects, meta, partitions: int, record_bytes: int) -> None:
        self.objects = objects
        self.meta = meta
        self.n = partitions
        self.record_bytes = record_bytes
        self.topic_id = str(uuid.uuid4())
        self.writer: LogWriter | None = None
        self.parts: list[SimPartition] = []

    async def setup(self) -> tuple[float, float]:
        session = await Session.register(self.meta, BrokerInfo(0, "127.0.0.1", 9092), SYSTEM_CLOCK.now_ms())
        self.writer = LogWriter(self.objects, self.meta, session, SYSTEM_CLOCK)
        template = make_template(self.record_bytes)
        before = self.meta.stats.write_units
        gate = asyncio.Semaphore(16)

        async def acquire(p: int) -> SimPartition:
            async with gate:
                rec = await self.writer.acquire(TOPIC, self.topic_id, p)
            return SimPartition(self.topic_id, rec.lease, template, rec.next_offset, rec.max_timestamp,
                                rec.producers, rec.next_offset)

        started = time.perf_counter()
        self.parts = list(await asyncio.gather(*(acquire(p) for p in range(self.n))))
        return time.perf_counter() - started, self.meta.stats.write_units - before

    async def flush(self, commit: Counts, latencies: list[float]) -> None:
        entries = [p.next_entry() for p in self.parts]
        groups = [FlushGroup(TOPIC, p.topic_id, p.lease.partition, [e]) for p, e in zip(self.parts, entries)]
        before = Snapshot.of(self.objects, self.meta)
        started = time.perf_counter()
        committed = await self.writer.commit(groups)
        latencies.append(time.perf_counter() - started)
        commit.add(before, Snapshot.of(self.objects, self.meta))
        for p, e in zip(self.parts, entries):
            p.committed(e, committed.refs[(p.topic_id, p.lease.partition)])

    async def checkpoint(self, counts: Counts, durations: list[float]) -> None:
        snaps = [p.snapshot() for p in self.parts]
        before = Snapshot.of(self.objects, self.meta)
        started = time.perf_counter()
        await self.writer.checkpoint(snaps)
        durations.append(time.perf_counter() - started)
        counts.add(before, Snapshot.of(self.objects, self.meta))
        for p, s in zip(self.parts, snaps):
            p.checkpointed(s)

    async def run_rate(self, rate: float, checkpoint_interval_ms: int, cycles: int) -> RateResult:
        commit, ckpt = Counts(), Counts()
        latencies: list[float] = []
        ckpt_durations: list[float] = []
        flushes = 0
        for _ in range(cycles):
            # The broker's own rule (interval, then the write-unit budget), on simulated time.
            since = 0
            while not checkpoint_due(round(since * 1000 / rate), checkpoint_interval_ms, since, len(self.parts)):
                await self.flush(commit, latencies)
                since += 1
            flushes += since
            await self.checkpoint(ckpt, ckpt_durations)
        return RateResult(
            rate=rate, flushes_per_checkpoint=round(flushes / cycles), flushes=flushes, checkpoints=cycles,
            commit_p50_ms=percentile(latencies, 50) * 1000, commit_p99_ms=percentile(latencies, 99) * 1000,
            checkpoint_mean_ms=statistics.fmean(ckpt_durations) * 1000,
            puts_per_flush=commit.object_requests.get("PutObject", 0) / flushes,
            commit_wu_per_flush=commit.write_units / flushes,
            checkpoint_wu_per_flush=ckpt.write_units / flushes,
            checkpoint_puts_per_flush=ckpt.object_requests.get("PutObject", 0) / flushes,
        )

    async def run_recovery(self, flushes: int, sample: int) -> RecoveryResult:
        """Commit ``flushes`` more without a checkpoint, then recover sampled partitions as a new owner."""
        scratch: list[float] = []
        for _ in range(flushes):
            await self.flush(Counts(), scratch)
        picks = sorted({0, self.n // 2, self.n - 1})[:sample]
        counting = ByteCountingObjects(self.objects)
        totals = Counts()
        started = time.perf_counter()
        for index in picks:
            p = self.parts[index]
            before = Snapshot.of(self.objects, self.meta)
            tail = await recover_tail(counting, self.meta, TOPIC, self.topic_id, p.lease.partition)
            totals.add(before, Snapshot.of(self.objects, self.meta))
            if tail.next_offset != p.next_offset or len(tail.refs) != len(p.refs):
                raise RuntimeError(f"recovery mismatch partition={index} recovered={tail.next_offset} "
                                   f"committed={p.next_offset} refs={len(tail.refs)}/{len(p.refs)}")
        elapsed = time.perf_counter() - started
        # A takeover of every partition, as a broker does it: one HeaderCache for all.
        whole = ByteCountingObjects(self.objects)
        shared = HeaderCache(whole)
        before = Snapshot.of(self.objects, self.meta)
        takeover_started = time.perf_counter()
        for p in self.parts:
            tail = await recover_tail(whole, self.meta, TOPIC, self.topic_id, p.lease.partition, headers=shared)
            if tail.next_offset != p.next_offset:
                raise RuntimeError(f"takeover mismatch partition={p.lease.partition}")
        takeover_seconds = time.perf_counter() - takeover_started
        takeover = Counts()
        takeover.add(before, Snapshot.of(self.objects, self.meta))
        k = len(picks)
        return RecoveryResult(
            takeover_gets=takeover.object_requests.get("GetObject", 0), takeover_mib_read=whole.bytes_read / 2**20,
            takeover_seconds=takeover_seconds,
            flushes_since_checkpoint=flushes, partitions_sampled=k,
            read_units=totals.read_units / k, meta_requests=sum(totals.meta_requests.values()) // k,
            gets=totals.object_requests.get("GetObject", 0) // k,
            mib_read=counting.bytes_read / k / 2**20, seconds=elapsed / k,
        )


def naive_costs(partitions: int, topic_id: str) -> tuple[float, float]:
    """What one conditional per-partition item per flush would cost (the design we avoided).

    Per flush each touched partition's state item is rewritten with its new
    end offset and the object reference, conditioned on the lease version:
    either N single conditional PutItems (fencing by lease version only), or
    TransactWriteItems of at most 100 operations each with the session check
    in every transaction (DynamoDB bills transactional writes double).
    """
    item = Item(keys.partition_pk(topic_id, 999), keys.STATE_SK, {
        "topic": TOPIC, "topic_id": topic_id, "partition": 999, "owner_node": 0, "owner_epoch": 12,
        "leader_epoch": 3, "version": 1234, "log_start_offset": 0, "next_offset": 123_456_789,
        "object": keys.ingest_object_key("0-12", 123_456), "position": 123_456, "length": 4321,
        "max_ts": 1_700_000_000_000,
    })
    per_item = write_units(item_size(item))
    check = write_units(item_size(Item(keys.BROKERS_PK, keys.broker_sk(0))), transactional=True)
    transactions = math.ceil(partitions / 99)
    return partitions * per_item, partitions * write_units(item_size(item), transactional=True) + transactions * check


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return ordered[rank]


async def run_scale(kind: str, partitions: int, args: argparse.Namespace, moto_url: str | None) -> ScaleResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-commit-{kind}-"))
    objects, meta = await open_backend(kind, workdir, moto_url)
    try:
        bench = Bench(objects, meta, partitions, args.record_bytes)
        acquire_s, acquire_wu = await bench.setup()
        rates = [await bench.run_rate(rate, args.checkpoint_interval_ms, args.cycles) for rate in args.rates]
        recovery = await bench.run_recovery(args.recovery_flushes, args.recovery_sample)
        single, txn = naive_costs(partitions, bench.topic_id)
        return ScaleResult(kind, partitions, acquire_s, acquire_wu, rates, recovery, single, txn)
    finally:
        await objects.close()
        await meta.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def print_scale(r: ScaleResult) -> None:
    print(f"\n== {r.backend}, {r.partitions} partitions "
          f"(acquire: {r.acquire_seconds:.1f} s, {r.acquire_wu:.0f} WU once) ==")
    print(f"{'flushes/s':>9} {'flushes':>7} {'ckpt every':>10} {'commit p50':>10} {'p99':>8} {'ckpt mean':>9} "
          f"{'PUT/flush':>9} {'WU commit':>9} {'WU ckpt':>8} {'WU total':>8}  target <= {TARGET_WU_PER_FLUSH}")
    for x in r.rates:
        verdict = "PASS" if x.total_wu_per_flush <= TARGET_WU_PER_FLUSH else "MISS"
        print(f"{x.rate:>9g} {x.flushes:>7} {x.flushes_per_checkpoint:>10} {x.commit_p50_ms:>8.1f}ms "
              f"{x.commit_p99_ms:>6.1f}ms {x.checkpoint_mean_ms:>7.0f}ms "
              f"{x.puts_per_flush + x.checkpoint_puts_per_flush:>9.3f} {x.commit_wu_per_flush:>9.2f} "
              f"{x.checkpoint_wu_per_flush:>8.2f} {x.total_wu_per_flush:>8.2f}  {verdict}")
    print(f"naive design (one conditional item per partition per flush): "
          f"{r.naive_single_wu:.0f} WU/flush as single PutItems, {r.naive_txn_wu:.0f} WU/flush as fenced transactions")
    v = r.recovery
    print(f"recovery of one partition after {v.flushes_since_checkpoint} flushes without a checkpoint "
          f"(mean of {v.partitions_sampled}): {v.read_units:.1f} RU in {v.meta_requests} metadata requests, "
          f"{v.gets} GETs, {v.mib_read:.1f} MiB read, {v.seconds * 1000:.0f} ms")
    if r.partitions > 1:
        print(f"  takeover of all {r.partitions} partitions with one header cache (as a broker does): "
              f"{v.takeover_gets:,} GETs, {v.takeover_mib_read:,.1f} MiB, {v.takeover_seconds:,.1f} s "
              f"(without the cache: ~{v.gets * r.partitions:,} GETs)")


def parse_list(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


async def main_async(args: argparse.Namespace) -> list[ScaleResult]:
    results = []
    moto = None
    try:
        for kind in args.backends:
            moto_url = None
            if kind == "moto":
                for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                                    ("AWS_DEFAULT_REGION", "us-east-1")):
                    os.environ.setdefault(name, value)
                moto = MotoServer()
                moto_url = moto.start()
            for n in (args.moto_partitions if kind == "moto" else args.partitions):
                result = await run_scale(kind, n, args, moto_url)
                print_scale(result)
                results.append(result)
            if moto is not None:
                moto.stop()
                moto = None
    finally:
        if moto is not None:
            moto.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one checkpoint cycle per rate, shorter recovery")
    parser.add_argument("--backends", type=parse_list(str), default=["embedded", "moto"])
    parser.add_argument("--partitions", type=parse_list(int), default=[1, 100, 1000])
    parser.add_argument("--moto-partitions", type=parse_list(int),
                        help="default 1,100 (quick: 1); moto's transactions copy the whole table, 1000 takes many minutes")
    parser.add_argument("--rates", type=parse_list(float), default=[4, 25], help="simulated flushes per second")
    parser.add_argument("--checkpoint-interval-ms", type=int, default=10_000, help="the broker default")
    parser.add_argument("--cycles", type=int, help="checkpoint cycles per rate (default 2, quick 1)")
    parser.add_argument("--recovery-flushes", type=int, help="flushes since the last checkpoint (default 250, quick 50)")
    parser.add_argument("--recovery-sample", type=int, default=3, help="partitions recovered and averaged")
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped too
    args.cycles = args.cycles or (1 if args.quick else 2)
    args.moto_partitions = args.moto_partitions or ([1] if args.quick else [1, 100])
    args.recovery_flushes = args.recovery_flushes if args.recovery_flushes is not None else (50 if args.quick else 250)
    if unknown := set(args.backends) - {"embedded", "moto"}:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    results = asyncio.run(main_async(args))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
