"""Tiering speed, and what tiering costs in requests per GiB.

Drives the real storage services with no broker in front of them: a session
commits flushes in which every partition gets one batch of ~1 KiB records
(text-like, so compressible as real payloads usually are), checkpointing
every ``--checkpoint-every`` flushes exactly as the broker does.  Then it
runs the maintenance jobs the Lambdas run -- tier, then GC twice (grace 0)
-- and finally reads the whole log back through `LogReader`, as a consumer
catching up from the beginning would.

Printed per phase: wall time, MiB/s of ingested batch bytes, and the S3
requests and DynamoDB requests and capacity units (from the adapters' own
``stats``, which follow DynamoDB's rules, see ``storage/cost.py``), both
measured and extrapolated to 1 GiB ingested.  The cost of tiering is
dominated by how big each partition's share of a flush is: tiering GETs
each partition's byte range of each ingest object once, so ``--batch-kib``
is the knob to try.

Run: ``python tests/benchmarks/bench_tiering.py [--mib 64] [--partitions 8]
[--batch-kib 64] [--target-mib 16] [--backends embedded,moto] [--json out.json]``.
Prints numbers; asserts only that what is read back is what was written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests.support` importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.moto_server import MotoServer  # noqa: E402
from tidelog.storage.catalog import Catalog  # noqa: E402
from tidelog.storage.clock import ManualClock, SystemClock  # noqa: E402
from tidelog.storage.cost import StoreStats  # noqa: E402
from tidelog.storage.factory import Storage, StorageConfig, open_storage  # noqa: E402
from tidelog.storage.maintenance import Maintenance, MaintenanceConfig  # noqa: E402
from tidelog.storage.partition_log import CheckpointInput, FlushGroup, LogWriter  # noqa: E402
from tidelog.storage.producers import ProducerStates  # noqa: E402
from tidelog.storage.reader import LogReader  # noqa: E402
from tidelog.storage.records import Record, build_batches, decode_records, patch_batch  # noqa: E402
from tidelog.storage.segments import BatchEntry  # noqa: E402
from tidelog.storage.sessions import BrokerInfo, Session  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
WORDS = [w.encode() for w in (
    "order payment shipped customer invoice refund warehouse parcel status created updated cancelled "
    "eu-west us-east priority standard express amount currency EUR USD GBP sku quantity discount "
    "user session click view cart checkout search query result page mobile desktop tablet").split()]


class WallClock(ManualClock):
    """Manual time starting now, so object last-modified times compare sensibly."""

    def __init__(self) -> None:
        super().__init__(SystemClock().now_ms())


@dataclass
class Phase:
    name: str
    seconds: float
    mib_per_s: float
    s3: dict
    dynamodb: dict
    read_units: float
    write_units: float
    per_gib: dict


def make_batch(rng: random.Random, batch_bytes: int, timestamp: int) -> bytes:
    """A fresh batch of ~1 KiB text-like records (never repeated, so compression ratios are honest)."""
    count = max(1, batch_bytes // 1040)
    words = rng.choices(WORDS, k=110 * count)
    records = [Record(i, timestamp, b"key-%d" % rng.randrange(10_000), b" ".join(words[i * 110:(i + 1) * 110])[:1000],
                      (("trace", b"%016x" % rng.getrandbits(64)),)) for i in range(count)]
    return build_batches(records, max_batch_bytes=batch_bytes * 2)[0]


def delta(before: dict, after: dict) -> dict:
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) != before.get(k, 0)}


class Meter:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.mark()

    def mark(self) -> None:
        self.s3 = dict(self.storage.objects.stats.requests)
        self.ddb = dict(self.storage.meta.stats.requests)
        self.ru = self.storage.meta.stats.read_units
        self.wu = self.storage.meta.stats.write_units
        self.t = time.perf_counter()

    def phase(self, name: str, ingested: int, exclude_s: float = 0.0) -> Phase:
        s: StoreStats = self.storage.objects.stats
        m: StoreStats = self.storage.meta.stats
        seconds = time.perf_counter() - self.t - exclude_s
        s3, ddb = delta(self.s3, s.requests), delta(self.ddb, m.requests)
        ru, wu = m.read_units - self.ru, m.write_units - self.wu
        scale = GIB / ingested
        per_gib = {"s3": {k: round(v * scale) for k, v in s3.items()},
                   "dynamodb": {k: round(v * scale) for k, v in ddb.items()},
                   "read_units": round(ru * scale), "write_units": round(wu * scale)}
        self.mark()
        return Phase(name, seconds, ingested / MIB / seconds, s3, ddb, ru, wu, per_gib)


async def run(storage: Storage, args: argparse.Namespace, label: str) -> list[Phase]:
    rng = random.Random(7)
    clock = WallClock()
    session = await Session.register(storage.meta, BrokerInfo(0, "127.0.0.1", 9092), clock.now_ms())
    writer = LogWriter(storage.objects, storage.meta, session, clock)
    topic = await Catalog(storage.meta).create("bench", args.partitions)
    leases = {}
    for p in range(args.partitions):
        got = await writer.acquire(topic.name, topic.topic_id, p)
        leases[p] = [got.lease, 0, 0, [], -1]  # lease, next offset, checkpoint start, refs, max ts
    meter = Meter(storage)
    ingested = flushes = 0
    generating = 0.0
    while ingested < args.mib * MIB:
        groups = []
        for p in range(args.partitions):
            lease, offset = leases[p][0], leases[p][1]
            started = time.perf_counter()
            raw = bytearray(make_batch(rng, args.batch_kib * 1024, clock.now_ms()))
            generating += time.perf_counter() - started
            patch_batch(raw, 0, offset, lease.leader_epoch)
            entry = BatchEntry.from_batch(bytes(raw))
            leases[p][1] = entry.last_offset + 1
            groups.append(FlushGroup(topic.name, topic.topic_id, p, [entry]))
            ingested += len(raw)
        committed = await writer.commit(groups)
        flushes += 1
        for p in range(args.partitions):
            ref = committed.refs[(topic.topic_id, p)]
            leases[p][3].append(ref)
            leases[p][4] = max(leases[p][4], ref.max_timestamp)
        if flushes % args.checkpoint_every == 0:
            await checkpoint(writer, leases)
    await checkpoint(writer, leases)
    phases = [meter.phase("ingest (flush + checkpoint)", ingested, exclude_s=generating)]

    config = MaintenanceConfig.from_options({"max_wait_ms": 0, "target_bytes": args.target_mib * MIB,
                                             "grace_ms": 0, "min_age_ms": 0})
    maintenance = Maintenance(storage.objects, storage.meta, clock, config)
    tiered = await maintenance.run("tier")
    assert not tiered["errors"], tiered["errors"]
    phases.append(meter.phase("tier", ingested))
    segments = tiered["totals"]["segments"]
    out_bytes = tiered["totals"]["bytes_out"]

    clock.advance(60_000)
    for _ in range(2):
        await maintenance.run("gc")
    phases.append(meter.phase("gc (two sweeps)", ingested))
    left = {root: len([i async for i in storage.objects.list(root)]) for root in ("ingest/", "index/", "tier/")}
    meter.mark()

    reader = LogReader(storage.objects, storage.meta, cache_bytes=16 * MIB)
    records = 0
    for p in range(args.partitions):
        offset, end = 0, leases[p][1]
        while offset < end:
            refs = await reader.locate(topic.topic_id, p, offset)
            for ref in refs:
                for entry in await reader.read(ref):
                    if entry.last_offset >= offset:
                        batch = decode_records(entry.batch)
                        assert batch[0].offset >= offset or batch[-1].offset >= offset
                        records += sum(1 for r in batch if r.offset >= offset)
                        offset = entry.last_offset + 1
    assert records == sum(leases[p][1] for p in range(args.partitions))
    phases.append(meter.phase("read everything back (tier chunks)", ingested))

    print(f"\n== {label}: {ingested / MIB:.1f} MiB ingested in {flushes} flushes x {args.partitions} partitions "
          f"({args.batch_kib} KiB per partition per flush), {segments} tier segments, "
          f"{out_bytes / MIB:.1f} MiB tiered ({ingested / max(out_bytes, 1):.1f}x smaller), "
          f"objects left after GC: {left}")
    for ph in phases:
        print(f"  {ph.name:<36} {ph.seconds:7.2f} s {ph.mib_per_s:8.1f} MiB/s")
        print(f"    measured: S3 {ph.s3}  DynamoDB {ph.dynamodb}  RU {ph.read_units:.0f}  WU {ph.write_units:.0f}")
        print(f"    per GiB:  S3 {ph.per_gib['s3']}  DynamoDB {ph.per_gib['dynamodb']}  "
              f"RU {ph.per_gib['read_units']}  WU {ph.per_gib['write_units']}")
    return phases


async def checkpoint(writer: LogWriter, leases: dict) -> None:
    parts = []
    for lease, offset, start, refs, max_ts in leases.values():
        if refs:
            parts.append(CheckpointInput(lease, start, offset, max_ts, list(refs), ProducerStates()))
    await writer.checkpoint(parts)
    for state in leases.values():
        state[2] = state[1]
        state[3] = []


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB to ingest (embedded)")
    parser.add_argument("--moto-mib", type=int, default=8, help="MiB to ingest on moto (slow, in memory)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch-kib", type=int, default=64, help="each partition's share of a flush")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="flushes between checkpoints")
    parser.add_argument("--target-mib", type=int, default=16, help="tier segment target size")
    parser.add_argument("--backends", default="embedded", help="comma-separated: embedded,moto")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    results = {}
    for backend in args.backends.split(","):
        if backend == "embedded":
            with tempfile.TemporaryDirectory(prefix="tidelog-bench-tier-") as tmp:
                storage = await open_storage(StorageConfig(data_dir=tmp))
                await storage.ensure(create=True)
                try:
                    results[backend] = await run(storage, args, "embedded store")
                finally:
                    await storage.close()
        elif backend == "moto":
            for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
                os.environ.setdefault(name, value)  # moto accepts any; never a real account's
            with MotoServer() as server:
                name = f"tidelog-bench-{uuid.uuid4().hex[:12]}"
                storage = await open_storage(StorageConfig(data_dir=None, s3_bucket=name, dynamodb_table=name,
                                                           endpoint_url=server.url))
                await storage.ensure(create=True)
                try:
                    moto_args = argparse.Namespace(**{**vars(args), "mib": args.moto_mib})
                    results[backend] = await run(storage, moto_args, "S3 + DynamoDB on moto")
                finally:
                    await storage.close()
        else:
            parser.error(f"unknown backend {backend!r}")
    if args.json:
        args.json.write_text(json.dumps({k: [asdict(p) for p in v] for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
