"""The client matrix: every client produces and consumes through a real broker, on both backends.

Each producer's records are read back by a *different* client, so a record
written by one library must decode identically in another: keys and null
keys, null values, headers, explicit timestamps, every codec, every acks
level, 1 MiB records, per-key ordering, and the three ways to start reading.
docs/compatibility.md summarises what this file proves.
"""

from __future__ import annotations

import time
import uuid

import pytest

from .clients import (
    ACKS,
    ALL_CLIENTS,
    CLIENTS,
    CODECS,
    EARLIEST,
    KCAT,
    At,
    Got,
    Rec,
    consume,
    consume_from_latest,
    create_topic,
    produce,
    watermarks,
)

# Who reads what each client wrote (falls back to confluent when kcat is missing).
READER = {"confluent": "kafka-python", "kafka-python": "aiokafka", "aiokafka": "kcat", "kcat": "confluent"}
HEADERS = (("h1", b"one"), ("trace-id", b"abc-123"))
MiB = 1024 * 1024


def reader_for(producer: str) -> str:
    reader = READER[producer]
    return "confluent" if reader == "kcat" and KCAT is None else reader


def new_topic(bootstrap: str, partitions: int = 1, **configs: str) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    create_topic(bootstrap, name, partitions, {k.replace("_", "."): v for k, v in configs.items()})
    return name


def sample(client: str, tag: str, base_ts: int) -> list[Rec]:
    """Six records covering keys, a null key, a null value, headers and explicit timestamps.

    kcat cannot set timestamps and sends one header set per run; its
    records leave timestamps to the client clock and group the headers.
    """
    ts = (lambda i: None) if client == "kcat" else (lambda i: base_ts + i)
    return [
        Rec(b"k0", f"{tag}-v0".encode(), HEADERS, ts(0)),
        Rec(None, f"{tag}-v1".encode(), HEADERS, ts(1)),
        Rec(b"k2", None, HEADERS, ts(2)),
        Rec(b"k3", f"{tag}-v3".encode(), (), ts(3)),
        Rec(None, f"{tag}-v4".encode(), (), ts(4)),
        Rec(b"k5", f"{tag}-v5".encode(), (), ts(5)),
    ]


def assert_same(got: list[Got], sent: list[Rec], first_offset: int = 0) -> None:
    """``got`` is exactly ``sent``, in order, at consecutive offsets from ``first_offset``."""
    assert len(got) == len(sent), f"read {len(got)} of {len(sent)} records: {got}"
    for i, (g, r) in enumerate(zip(got, sent)):
        assert g.offset == first_offset + i
        assert (g.key, g.value) == (r.key, r.value), f"record {i}"
        assert list(g.headers) == list(r.headers), f"record {i} headers"
        if r.timestamp is not None:
            assert g.timestamp == r.timestamp, f"record {i} timestamp"
        else:
            assert abs(g.timestamp - time.time() * 1000) < 600_000, f"record {i} timestamp {g.timestamp}"


def now_ms() -> int:
    return int(time.time() * 1000)


# Batches are stored as the producer compressed them, so the codec matrix is the same
# on every backend; on S3 + DynamoDB each producer runs "none" and one codec (all
# five codecs still get stored there, and all twenty pairs run on the embedded store).
AWS_CODEC = {"confluent": "gzip", "kafka-python": "snappy", "aiokafka": "lz4", "kcat": "zstd"}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", ALL_CLIENTS)
def test_codec_roundtrip_across_clients(broker, backend: str, producer: str, codec: str) -> None:
    if backend == "aws" and codec not in ("none", AWS_CODEC[producer]):
        pytest.skip("codec handling does not depend on the backend; the embedded run covers this pair")
    topic = new_topic(broker.bootstrap)
    sent = sample(producer, f"{producer}-{codec}", now_ms() - 60_000)
    acked = produce(producer, broker.bootstrap, topic, sent, acks="all", compression=codec)
    if producer != "kcat":
        assert [o for _, o in acked] == list(range(len(sent)))
    got = consume(reader_for(producer), broker.bootstrap, topic, 0, len(sent))
    assert_same(got, sent)
    assert watermarks(broker.bootstrap, topic, 0) == (0, len(sent))


@pytest.mark.parametrize("acks", ACKS, ids=lambda a: f"acks-{a}")
@pytest.mark.parametrize("producer", ALL_CLIENTS)
def test_acks_levels(broker, producer: str, acks) -> None:
    topic = new_topic(broker.bootstrap)
    sent = [Rec(f"k{i}".encode(), f"{producer}-acks{acks}-{i}".encode()) for i in range(5)]
    acked = produce(producer, broker.bootstrap, topic, sent, acks=acks)
    # acks=0 has no answer, so what a client reports as offsets is its own invention
    # (librdkafka -1001, kafka-python -1 plus the record's index, aiokafka nothing).
    if acks != 0 and producer != "kcat":
        assert [o for _, o in acked] == list(range(5))
    # acks=0 has no answer to wait for: the read simply waits until the flush lands.
    assert_same(consume("confluent", broker.bootstrap, topic, 0, len(sent)), sent)


@pytest.mark.parametrize("producer", ALL_CLIENTS)
def test_one_mib_records(broker, producer: str) -> None:
    # A 1 MiB record's batch is slightly over the 1048588-byte default max.message.bytes.
    topic = new_topic(broker.bootstrap, max_message_bytes=str(2 * MiB))
    big = (producer[0] * MiB).encode()
    sent = [Rec(b"big", big), Rec(b"small", b"after-the-big-one")]
    produce(producer, broker.bootstrap, topic, sent, compression="none", max_request_bytes=3 * MiB)
    # Default fetch sizes (1 MiB per partition): the broker must still return the
    # first batch whole even though it is larger (KIP-74), or the reader stalls.
    got = consume(reader_for(producer), broker.bootstrap, topic, 0, 2)
    assert [(g.offset, g.key, len(g.value)) for g in got] == [(0, b"big", MiB), (1, b"small", 17)]
    assert got[0].value == big


def test_default_max_message_bytes_refuses_one_mib(broker) -> None:
    from .clients import ClientError

    topic = new_topic(broker.bootstrap)
    with pytest.raises(ClientError, match="MSG_SIZE_TOO_LARGE|too large"):
        produce("confluent", broker.bootstrap, topic, [Rec(b"big", b"x" * MiB)], max_request_bytes=3 * MiB)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0)


@pytest.mark.parametrize("producer", ALL_CLIENTS)
def test_per_key_order_across_partitions(broker, producer: str) -> None:
    topic = new_topic(broker.bootstrap, partitions=3)
    keys = [f"key-{k}".encode() for k in range(6)]
    sent = [Rec(k, f"{k.decode()}:{i}".encode()) for i in range(5) for k in keys]
    produce(producer, broker.bootstrap, topic, sent, acks="all")
    seen: dict[bytes, tuple[int, list[int]]] = {}
    total = 0
    for p in range(3):
        start, end = watermarks(broker.bootstrap, topic, p)
        got = consume("confluent", broker.bootstrap, topic, p, end - start)
        assert [g.offset for g in got] == list(range(start, end))
        total += len(got)
        for g in got:
            partition, order = seen.setdefault(g.key, (p, []))
            assert partition == p, f"{g.key!r} in partitions {partition} and {p}"
            order.append(int(g.value.split(b":")[1]))
    assert total == len(sent)
    assert {k: order for k, (_, order) in seen.items()} == {k: list(range(5)) for k in keys}


@pytest.mark.parametrize("consumer", ALL_CLIENTS)
def test_start_positions(broker, consumer: str) -> None:
    topic = new_topic(broker.bootstrap)
    base = now_ms() - 100_000
    sent = [Rec(f"k{i}".encode(), f"old-{i}".encode(), timestamp=base + 1000 * i) for i in range(6)]
    produce("confluent", broker.bootstrap, topic, sent)

    assert_same(consume(consumer, broker.bootstrap, topic, 0, 6, start=EARLIEST), sent)
    # From a timestamp: the first record at or after it (ListOffsets with a timestamp).
    got = consume(consumer, broker.bootstrap, topic, 0, 3, start=At(timestamp=base + 2500))
    assert [(g.offset, g.value) for g in got] == [(3, b"old-3"), (4, b"old-4"), (5, b"old-5")]
    got = consume(consumer, broker.bootstrap, topic, 0, 2, start=At(offset=4))
    assert [g.offset for g in got] == [4, 5]
    # From latest: nothing written before the consumer started is seen.
    got = consume_from_latest(consumer, broker.bootstrap, topic, 0,
                              lambda i: produce("confluent", broker.bootstrap, topic, [Rec(b"n", f"new-{i}".encode())]))
    assert len(got) == 1 and got[0].value.startswith(b"new-") and got[0].offset >= 6


def test_timestamp_after_last_record_finds_nothing(broker) -> None:
    topic = new_topic(broker.bootstrap)
    base = now_ms() - 50_000
    produce("kafka-python", broker.bootstrap, topic, [Rec(b"k", b"v", timestamp=base)])
    for client in ("confluent", "kafka-python", "aiokafka"):
        assert consume(client, broker.bootstrap, topic, 0, 1, start=At(timestamp=base + 1), timeout=3) == []


@pytest.fixture(scope="module")
def mixed_topic(broker):
    """One topic written by every available producer in turn, with what each sent."""
    topic = new_topic(broker.bootstrap)
    sent: list[Rec] = []
    for client in CLIENTS:
        if client == "kcat" and KCAT is None:
            continue
        recs = sample(client, f"mixed-{client}", now_ms() - 30_000)
        produce(client, broker.bootstrap, topic, recs, compression="lz4" if client == "aiokafka" else "zstd")
        sent += recs
    return topic, sent


@pytest.mark.parametrize("consumer", ALL_CLIENTS)
def test_every_consumer_reads_every_producer(broker, mixed_topic, consumer: str) -> None:
    topic, sent = mixed_topic
    assert_same(consume(consumer, broker.bootstrap, topic, 0, len(sent)), sent)
