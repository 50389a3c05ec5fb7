"""How fast `tidelog recover` rebuilds metadata from a bucket (embedded adapters, or moto with --moto).

Writes ``--objects`` flushes of ``--partitions`` partitions each through the
real commit protocol, then times `recovery.recover` into a fresh table and
prints objects/s, MiB/s and the request counts that drive the AWS bill.

    python -m tests.benchmarks.bench_recovery --objects 400 --partitions 50 --batch-kib 16
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import ManualClock
from tidelog.storage.partition_log import FlushGroup, LogWriter
from tidelog.storage.records import Record, build_batches, patch_batch
from tidelog.storage.recovery import recover
from tidelog.storage.segments import BatchEntry
from tidelog.storage.sessions import BrokerInfo, Session


async def stores(kind: str, root: Path, endpoint: str | None):
    if kind == "local":
        from tidelog.storage.adapters.localdir import LocalObjectStore
        from tidelog.storage.adapters.sqlite import SqliteMetaStore

        objects = await LocalObjectStore.open(root / "bucket")
        primary = await SqliteMetaStore.open(root / "primary.db")
        fresh = await SqliteMetaStore.open(root / "fresh.db")
    else:
        from tidelog.storage.adapters.dynamodb import DynamoMetaStore
        from tidelog.storage.adapters.s3 import S3ObjectStore

        name = f"bench-recovery-{uuid.uuid4().hex[:12]}"
        objects = await S3ObjectStore.open(name, endpoint_url=endpoint)
        primary = await DynamoMetaStore.open(name + "-p", endpoint_url=endpoint)
        fresh = await DynamoMetaStore.open(name + "-f", endpoint_url=endpoint)
    await objects.ensure(create=True)
    await primary.ensure(create=True)
    return objects, primary, fresh


async def run(args) -> None:
    endpoint = None
    server = None
    if args.moto:
        import os

        from tests.support.moto_server import MotoServer

        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        server = MotoServer()
        endpoint = server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            objects, primary, fresh = await stores("moto" if args.moto else "local", Path(tmp), endpoint)
            clock = ManualClock()
            topic = await Catalog(primary).create("bench", args.partitions)
            writer = LogWriter(objects, primary, await Session.register(primary, BrokerInfo(0, "h", 1), 0), clock)
            leases = {p: (await writer.acquire("bench", topic.topic_id, p)).lease for p in range(args.partitions)}
            value = b"x" * 1024
            per_batch = max(1, args.batch_kib)
            template = build_batches([Record(i, 1_700_000_000_000, b"k", value) for i in range(per_batch)])[0]
            nxt = dict.fromkeys(range(args.partitions), 0)
            written = 0
            for _ in range(args.objects):
                groups = []
                for p in range(args.partitions):
                    batch = bytearray(template)
                    patch_batch(batch, 0, nxt[p], leases[p].leader_epoch)
                    groups.append(FlushGroup("bench", topic.topic_id, p, [BatchEntry.from_batch(bytes(batch))]))
                    nxt[p] += per_batch
                    written += len(batch)
                await writer.commit(groups)
            started = time.perf_counter()
            report = await recover(objects, fresh, clock, concurrency=args.concurrency)
            elapsed = time.perf_counter() - started
            mib = report.scan.bytes_read / 2**20
            print(f"backend={'moto' if args.moto else 'local'} objects={report.scan.objects} "
                  f"partitions={len(report.partitions)} bytes={mib:.1f}MiB elapsed={elapsed:.2f}s "
                  f"objects_per_s={report.scan.objects / elapsed:.0f} MiB_per_s={mib / elapsed:.1f} "
                  f"items_written={report.items_written} index_objects={report.index_objects}")
            print(f"requests: object store {dict(objects.stats.requests)} "
                  f"metadata {dict(fresh.stats.requests)} write_units={fresh.stats.write_units}")
            for store in (objects, primary, fresh):
                await store.close()
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=400)
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--batch-kib", type=int, default=16, help="records of 1 KiB per partition per flush")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--moto", action="store_true", help="S3/DynamoDB on a local moto server")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
