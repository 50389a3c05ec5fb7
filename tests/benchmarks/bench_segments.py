"""Throughput of the record-batch and Avro segment codecs.

Run: ``python tests/benchmarks/bench_segments.py [--mib 64]``.  Prints MiB/s
(and records/s where records are the unit of work).  Each figure is the best
of a few repetitions, to keep scheduler noise on a 2-core machine out of it.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from tidelog.storage.records import (
    COMPRESSION_NONE,
    Record,
    build_batches,
    decode_records,
    validate_produce_records,
)
from tidelog.storage.segments import (
    BatchEntry,
    decode_ingest_segment,
    decode_partition_blocks,
    decode_segment_header,
    decode_tier_segment,
    encode_ingest_segment,
    encode_tier_segment,
)

MIB = 1024 * 1024


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def report(name: str, nbytes: int, seconds: float, extra: str = "") -> None:
    print(f"{name:<44} {nbytes / MIB / seconds:10.1f} MiB/s  {extra}")


def make_batch_pool(rng: random.Random, batch_bytes: int, count: int) -> list[bytes]:
    """Distinct 16 KiB-ish batches of 1 KiB incompressible records (as producers would send)."""
    pool = []
    for i in range(count):
        records = [
            Record(j, 1_700_000_000_000 + j, b"key-%d" % j, os.urandom(1000), (("trace", b"x"),))
            for j in range(batch_bytes // 1040)
        ]
        pool.extend(build_batches(records, compression=COMPRESSION_NONE, max_batch_bytes=batch_bytes + 1024))
    rng.shuffle(pool)
    return pool[:count]


def make_groups(pool: list[bytes], total_bytes: int, partitions: int) -> list[tuple[str, int, list[BatchEntry]]]:
    per_partition = total_bytes // partitions
    groups = []
    i = 0
    for p in range(partitions):
        offset = 1_000_000 * p
        entries = []
        size = 0
        while size < per_partition:
            batch = bytearray(pool[i % len(pool)])
            i += 1
            batch[0:8] = offset.to_bytes(8, "big", signed=True)
            entry = BatchEntry.from_batch(bytes(batch))
            entries.append(entry)
            offset = entry.last_offset + 1
            size += len(batch)
        groups.append((f"topic-{p % 7}", p, entries))
    return groups


def bench_records(pool: list[bytes]) -> None:
    nbytes = sum(map(len, pool))

    def validate() -> None:
        for b in pool:
            validate_produce_records(b, max_batch_bytes=MIB)

    t = best_of(validate)
    report("produce validation (header + crc32c)", nbytes, t, f"{len(pool) / t:,.0f} batches/s")

    decoded = [r for b in pool[:64] for r in decode_records(b)]
    records = [Record(i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(decoded)]
    rec_bytes = sum(len(b) for b in pool[:64])
    t = best_of(lambda: [decode_records(b) for b in pool[:64]])
    report("decode_records (C extension, none)", rec_bytes, t, f"{len(records) / t:,.0f} records/s")
    t = best_of(lambda: build_batches(records, max_batch_bytes=16 * 1024))
    report("build_batches (C extension, none)", rec_bytes, t, f"{len(records) / t:,.0f} records/s")


def bench_ingest(groups: list[tuple[str, int, list[BatchEntry]]]) -> None:
    nbytes = sum(len(e.batch) for _, _, entries in groups for e in entries)
    nbatches = sum(len(entries) for _, _, entries in groups)
    seg = encode_ingest_segment(groups, writer="bench", seq=1, created_ms=0)
    t = best_of(lambda: encode_ingest_segment(groups, writer="bench", seq=1, created_ms=0))
    report(f"ingest encode ({nbatches} batches, {len(groups)} partitions)", nbytes, t, f"{nbatches / t:,.0f} batches/s")
    t = best_of(lambda: decode_ingest_segment(seg.data))
    report("ingest decode, whole object (range crc)", len(seg.data), t)

    prefix = seg.data[: 64 * 1024]
    header = decode_segment_header(prefix)
    n = 200
    t = best_of(lambda: [decode_segment_header(prefix) for _ in range(n)])
    print(f"{'ingest header parse (64 KiB prefix)':<44} {n / t:10.0f} headers/s  "
          f"header={header.data_start} bytes for {len(header.partitions)} partitions")

    ranges = [(seg.data[s.position : s.end], s) for s in header.partitions]
    rbytes = sum(len(r) for r, _ in ranges)
    t = best_of(lambda: [decode_partition_blocks(r) for r, _ in ranges])
    report("partition-range decode (per-batch crc)", rbytes, t)
    t = best_of(lambda: [decode_partition_blocks(r, expect=s, sync=header.sync) for r, s in ranges])
    report("partition-range decode (range crc, expect=)", rbytes, t)


def bench_tier(rng: random.Random, count: int) -> None:
    # Half-random values: realistic-ish for compression (JSON-like payloads compress ~2-3x).
    records = [
        Record(i, 1_700_000_000_000 + i, b"user-%d" % rng.randrange(10_000),
               (b'{"event":"click","page":"/p/%d","pad":"' % i) + os.urandom(300).hex().encode()[:950] + b'"}',
               (("source", b"web"),))
        for i in range(count)
    ]
    nbytes = sum(len(r.value or b"") + len(r.key or b"") for r in records)
    for codec in ("zstandard", "snappy"):
        data = encode_tier_segment("bench", 0, records, codec=codec)
        t = best_of(lambda: encode_tier_segment("bench", 0, records, codec=codec), repeat=2)
        report(f"tier encode {codec} ({count} x ~1 KiB records)", nbytes, t,
               f"{count / t:,.0f} records/s, ratio {nbytes / len(data):.2f}")
        t = best_of(lambda: decode_tier_segment(data), repeat=2)
        report(f"tier decode {codec}", nbytes, t, f"{count / t:,.0f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64, help="ingest segment size in MiB")
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--tier-records", type=int, default=50_000)
    args = parser.parse_args()
    rng = random.Random(7)
    pool = make_batch_pool(rng, 16 * 1024, 256)
    bench_records(pool)
    bench_ingest(make_groups(pool, args.mib * MIB, args.partitions))
    bench_tier(rng, args.tier_records)


if __name__ == "__main__":
    main()
