"""Throughput of the broker's protocol layer: framing, request decoding, response encoding.

Run: ``python tests/benchmarks/bench_wire.py``.  Prints operations/s and MiB/s;
each figure is the best of a few repetitions, to keep scheduler noise on a
2-core machine out of it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

from tidelog.broker import wire
from tidelog.broker.errors import ErrorCode
from tidelog.broker.framing import FrameParser

MIB = 1024 * 1024


def best_of(fn: Callable[[], int], repeats: int = 5) -> float:
    """Best units/s of ``fn`` (which returns how many units it processed)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        units = fn()
        best = max(best, units / (time.perf_counter() - start))
    return best


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def bench_framing() -> None:
    small = b"".join(framed(os.urandom(100)) for _ in range(20_000))
    large = b"".join(framed(os.urandom(MIB)) for _ in range(16))

    def run(stream: bytes, chunk: int) -> Callable[[], int]:
        def go() -> int:
            parser = FrameParser(2 * MIB)
            count = 0
            for start in range(0, len(stream), chunk):
                parser.feed(stream[start : start + chunk])
                while parser.next_frame() is not None:
                    count += 1
            return count

        return go

    print(f"framing  100 B frames, 64 KiB reads : {best_of(run(small, 65536)):>12,.0f} frames/s")
    print(f"framing  1 MiB frames, 64 KiB reads : {best_of(run(large, 65536)):>12,.1f} MiB/s")


def produce_payload(partitions: int, batch_bytes: int) -> bytes:
    cls = wire.request_class(wire.ApiKey.Produce, 9)
    topic = cls.TopicProduceData
    body = cls(
        acks=-1,
        timeout_ms=30_000,
        topic_data=[
            topic(
                name="bench",
                partition_data=[
                    topic.PartitionProduceData(index=i, records=os.urandom(batch_bytes)) for i in range(partitions)
                ],
            )
        ],
    )
    body.with_header(1, client_id="bench")
    return bytes(body.encode(header=True))


def bench_decode() -> None:
    one = produce_payload(1, 16 * 1024)
    many = produce_payload(32, 1024)

    def run(payload: bytes, n: int) -> Callable[[], int]:
        def go() -> int:
            for _ in range(n):
                wire.decode_request(payload)
            return n

        return go

    print(f"decode   Produce v9, 1 x 16 KiB      : {best_of(run(one, 20_000)):>12,.0f} req/s")
    print(f"decode   Produce v9, 32 x 1 KiB      : {best_of(run(many, 5_000)):>12,.0f} req/s")


def bench_encode() -> None:
    request = wire.DecodedRequest(wire.ApiKey.Fetch, 12, 1, "bench", 2, None)
    records = os.urandom(MIB)

    def fetch_response() -> int:
        n = 200
        for _ in range(n):
            partition = {"partition_index": 0, "high_watermark": 1, "records": records}
            body = wire.make_response(request, responses=[{"topic": "bench", "partitions": [partition]}])
            wire.encode_response(request, body)
        return n * MIB

    print(f"encode   Fetch v12, 1 MiB records    : {best_of(fetch_response) / MIB:>12,.1f} MiB/s")

    produce = wire.decode_request(produce_payload(32, 100))

    def errors() -> int:
        n = 5_000
        for _ in range(n):
            wire.error_response(produce, ErrorCode.NOT_LEADER_OR_FOLLOWER)
        return n

    print(f"encode   error_response Produce x32  : {best_of(errors):>12,.0f} resp/s")

    def fallback() -> int:
        n = 20_000
        for i in range(n):
            wire.encode_api_versions_fallback(i)
        return n

    print(f"encode   ApiVersions v0 fallback     : {best_of(fallback):>12,.0f} resp/s")


if __name__ == "__main__":
    bench_framing()
    bench_decode()
    bench_encode()
