"""One produce and one consume function per real Kafka client, with the same shape.

The e2e tests are written against these four adapters (confluent-kafka,
kafka-python, aiokafka, and the kcat binary), so every scenario runs through
every client the same way and any client can read what another wrote.
Values in the tests are ASCII so kcat's JSON output can carry them.

Consumers never join a group: they assign partitions and position themselves
(earliest, latest, an offset, or a timestamp through ListOffsets), which is
the produce/fetch path this suite proves.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import pytest

CLIENTS = ("confluent", "kafka-python", "aiokafka", "kcat")
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = (0, 1, "all")
KCAT = shutil.which("kcat")
SKIP_KCAT = "kcat is not installed (Debian package `kcat`; .ci/run installs it)"
TIMEOUT_S = 30.0


def client_param(name: str):
    """A pytest param for ``name`` that skips with a reason when the client is missing."""
    marks = [pytest.mark.skipif(KCAT is None, reason=SKIP_KCAT)] if name == "kcat" else []
    return pytest.param(name, id=name, marks=marks)


ALL_CLIENTS = [client_param(c) for c in CLIENTS]


@dataclass(frozen=True)
class Rec:
    """A record to produce; ``partition`` None lets the client's partitioner choose."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None
    partition: int | None = None


@dataclass(frozen=True)
class Got:
    """A consumed record as the client reported it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


class ClientError(AssertionError):
    """A client reported a failure the test did not expect."""


# --------------------------------------------------------------------------
# Producing
# --------------------------------------------------------------------------


def produce(client: str, bootstrap: str, topic: str, recs: Sequence[Rec], *, acks: int | str = "all",
            compression: str = "none", max_request_bytes: int | None = None,
            idempotent: bool = False) -> list[tuple[int, int]]:
    """Send ``recs`` in order, wait for every delivery, and return (partition, offset) per record.

    The offset is -1 for acks=0 (the broker does not answer).  Raises
    ``ClientError`` with the client's own error text if any record failed.
    """
    return _PRODUCERS[client](bootstrap, topic, list(recs), acks=acks, compression=compression,
                              max_request_bytes=max_request_bytes, idempotent=idempotent)


def _produce_confluent(bootstrap, topic, recs, *, acks, compression, max_request_bytes, idempotent):
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "acks": str(acks), "compression.type": compression,
            "enable.idempotence": idempotent, "linger.ms": 5, "message.timeout.ms": int(TIMEOUT_S * 1000)}
    if max_request_bytes:
        conf["message.max.bytes"] = max_request_bytes
    producer = Producer(conf)
    results: list = [None] * len(recs)

    def report(i):
        def done(err, msg):
            results[i] = err if err is not None else (msg.partition(), msg.offset())
        return done

    for i, r in enumerate(recs):
        kwargs = {"key": r.key, "value": r.value, "on_delivery": report(i)}
        if r.headers:
            kwargs["headers"] = list(r.headers)
        if r.timestamp is not None:
            kwargs["timestamp"] = r.timestamp
        if r.partition is not None:
            kwargs["partition"] = r.partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    left = producer.flush(TIMEOUT_S)
    if left:
        raise ClientError(f"confluent: {left} records undelivered")
    return _check(results, "confluent")


def _produce_kafka_python(bootstrap, topic, recs, *, acks, compression, max_request_bytes, idempotent):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=acks,
                             compression_type=None if compression == "none" else compression,
                             enable_idempotence=idempotent, linger_ms=5,
                             max_request_size=max_request_bytes or 1048576)
    try:
        futures = [producer.send(topic, key=r.key, value=r.value, headers=list(r.headers) or None,
                                 timestamp_ms=r.timestamp, partition=r.partition) for r in recs]
        producer.flush(TIMEOUT_S)
        results = []
        for f in futures:
            try:
                meta = f.get(TIMEOUT_S)
                results.append((meta.partition, meta.offset))
            except Exception as exc:  # noqa: BLE001 - reported below with the client's words
                results.append(exc)
    finally:
        producer.close(timeout=5)
    return _check(results, "kafka-python")


def _produce_aiokafka(bootstrap, topic, recs, *, acks, compression, max_request_bytes, idempotent):
    from aiokafka import AIOKafkaProducer

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=acks,
                                    compression_type=None if compression == "none" else compression,
                                    enable_idempotence=idempotent, linger_ms=5,
                                    max_request_size=max_request_bytes or 1048576,
                                    request_timeout_ms=int(TIMEOUT_S * 1000))
        await producer.start()
        try:
            futures = [await producer.send(topic, key=r.key, value=r.value, headers=list(r.headers) or None,
                                           timestamp_ms=r.timestamp, partition=r.partition) for r in recs]
            results = []
            for f in futures:
                try:
                    meta = await f
                    # acks=0: aiokafka resolves the future with None (there is no answer).
                    results.append((-1, -1) if meta is None else (meta.partition, meta.offset))
                except Exception as exc:  # noqa: BLE001
                    results.append(exc)
            return results
        finally:
            await producer.stop()
    return _check(asyncio.run(run()), "aiokafka")


def _produce_kcat(bootstrap, topic, recs, *, acks, compression, max_request_bytes, idempotent):
    """kcat sends a whole run with one header set and no explicit timestamps, so runs are grouped.

    Keys and values travel as ``key<TAB>value`` lines with ``-Z`` (empty means
    null); the broker's answer is read back from kcat's JSON delivery reports.
    """
    out = []
    i = 0
    while i < len(recs):
        j = i
        while j < len(recs) and (recs[j].headers, recs[j].partition) == (recs[i].headers, recs[i].partition):
            j += 1
        out += _kcat_run(bootstrap, topic, recs[i:j], acks=acks, compression=compression,
                         max_request_bytes=max_request_bytes, idempotent=idempotent)
        i = j
    return _check(out, "kcat")


def _kcat_run(bootstrap, topic, recs, *, acks, compression, max_request_bytes, idempotent):
    for r in recs:
        if r.timestamp is not None:
            raise ValueError("kcat cannot set record timestamps")
        for part in (r.key, r.value):
            if part is not None and (part == b"" or b"\t" in part or b"\n" in part):
                raise ValueError("kcat records must be non-empty and free of tabs and newlines")
    args = [KCAT, "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-Z", "-z", compression,
            "-X", f"acks={acks}", "-X", f"enable.idempotence={'true' if idempotent else 'false'}",
            "-X", f"message.timeout.ms={int(TIMEOUT_S * 1000)}", "-X", "linger.ms=5"]
    if max_request_bytes:
        args += ["-X", f"message.max.bytes={max_request_bytes}"]
    if recs[0].partition is not None:
        args += ["-p", str(recs[0].partition)]
    for name, value in recs[0].headers:
        args += ["-H", f"{name}={value.decode()}"]
    lines = b"".join((r.key or b"") + b"\t" + (r.value or b"") + b"\n" for r in recs)
    done = subprocess.run(args, input=lines, capture_output=True, timeout=TIMEOUT_S + 10)
    if done.returncode != 0:
        raise ClientError(f"kcat producer exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}")
    # kcat has no per-record delivery output in -P mode; resolve offsets by reading back
    # is the caller's job.  Report unknown offsets, which is all acks=0 would give anyway.
    return [(r.partition if r.partition is not None else -1, -1) for r in recs]


def _check(results: list, who: str) -> list[tuple[int, int]]:
    failed = [r for r in results if not isinstance(r, tuple)]
    if failed:
        raise ClientError(f"{who}: {len(failed)} of {len(results)} records failed: {failed[0]!r}")
    return results


_PRODUCERS: dict[str, Callable] = {"confluent": _produce_confluent, "kafka-python": _produce_kafka_python,
                                   "aiokafka": _produce_aiokafka, "kcat": _produce_kcat}


# --------------------------------------------------------------------------
# Consuming
# --------------------------------------------------------------------------

EARLIEST = "earliest"
LATEST = "latest"


@dataclass(frozen=True)
class At:
    """Start at an offset (``offset``) or at the first record at/after a timestamp (``timestamp``)."""

    offset: int | None = None
    timestamp: int | None = None


def consume(client: str, bootstrap: str, topic: str, partition: int, count: int, *, start=EARLIEST,
            max_fetch_bytes: int | None = None, timeout: float = TIMEOUT_S) -> list[Got]:
    """Read ``count`` records of one partition from ``start`` (EARLIEST, LATEST or an `At`).

    Returns early only on timeout, with what arrived; tests assert on the
    list, so a short read fails with the records that did come.
    """
    if count == 0:
        return []
    return _CONSUMERS[client](bootstrap, topic, partition, count, start, max_fetch_bytes, timeout)


def _consume_confluent(bootstrap, topic, partition, count, start, max_fetch_bytes, timeout):
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    conf = {"bootstrap.servers": bootstrap, "group.id": "tidelog-e2e-unused", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "error"}
    if max_fetch_bytes:
        conf.update({"fetch.max.bytes": max_fetch_bytes, "max.partition.fetch.bytes": max_fetch_bytes,
                     "message.max.bytes": max(1000, min(max_fetch_bytes, 1_000_000)),
                     "receive.message.max.bytes": max_fetch_bytes + 65536})
    consumer = Consumer(conf)
    try:
        if start == EARLIEST:
            offset = OFFSET_BEGINNING
        elif start == LATEST:
            offset = OFFSET_END
        elif start.timestamp is not None:
            found = consumer.offsets_for_times([TopicPartition(topic, partition, start.timestamp)], timeout)
            offset = found[0].offset
            if offset < 0:
                return []
        else:
            offset = start.offset
        consumer.assign([TopicPartition(topic, partition, offset)])
        out: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                raise ClientError(f"confluent consumer: {msg.error()}")
            out.append(Got(msg.partition(), msg.offset(), msg.key(), msg.value(),
                           tuple(msg.headers() or ()), msg.timestamp()[1]))
        return out
    finally:
        consumer.close()


def _consume_kafka_python(bootstrap, topic, partition, count, start, max_fetch_bytes, timeout):
    from kafka import KafkaConsumer, TopicPartition

    kwargs = {}
    if max_fetch_bytes:
        kwargs = {"fetch_max_bytes": max_fetch_bytes, "max_partition_fetch_bytes": max_fetch_bytes}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="none",
                             **kwargs)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if start == EARLIEST:
            consumer.seek_to_beginning(tp)
        elif start == LATEST:
            consumer.seek_to_end(tp)
        elif start.timestamp is not None:
            found = consumer.offsets_for_times({tp: start.timestamp})[tp]
            if found is None:
                return []
            consumer.seek(tp, found.offset)
        else:
            consumer.seek(tp, start.offset)
        consumer.position(tp)  # resolve the position now, before the caller produces more
        out: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for msgs in consumer.poll(200, max_records=count - len(out)).values():
                out += [Got(m.partition, m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp)
                        for m in msgs]
        return out
    finally:
        consumer.close()


def _consume_aiokafka(bootstrap, topic, partition, count, start, max_fetch_bytes, timeout):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        kwargs = {}
        if max_fetch_bytes:
            kwargs = {"fetch_max_bytes": max_fetch_bytes, "max_partition_fetch_bytes": max_fetch_bytes}
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="none", **kwargs)
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            if start == EARLIEST:
                await consumer.seek_to_beginning(tp)
            elif start == LATEST:
                await consumer.seek_to_end(tp)
            elif start.timestamp is not None:
                found = (await consumer.offsets_for_times({tp: start.timestamp}))[tp]
                if found is None:
                    return []
                consumer.seek(tp, found.offset)
            else:
                consumer.seek(tp, start.offset)
            await consumer.position(tp)
            out: list[Got] = []
            deadline = time.monotonic() + timeout
            while len(out) < count and time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=count - len(out))
                for msgs in batch.values():
                    out += [Got(m.partition, m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp)
                            for m in msgs]
            return out
        finally:
            await consumer.stop()
    return asyncio.run(run())


def _consume_kcat(bootstrap, topic, partition, count, start, max_fetch_bytes, timeout):
    if start == EARLIEST:
        offset = "beginning"
    elif start == LATEST:
        offset = "end"
    elif start.timestamp is not None:
        offset = f"s@{start.timestamp}"
    else:
        offset = str(start.offset)
    args = [KCAT, "-C", "-b", bootstrap, "-t", topic, "-p", str(partition), "-o", offset, "-c", str(count),
            "-J", "-q", "-X", "auto.offset.reset=error"]
    if max_fetch_bytes:
        args += ["-X", f"fetch.max.bytes={max_fetch_bytes}", "-X", f"max.partition.fetch.bytes={max_fetch_bytes}",
                 "-X", f"message.max.bytes={max(1000, min(max_fetch_bytes, 1_000_000))}",
                 "-X", f"receive.message.max.bytes={max_fetch_bytes + 65536}"]
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout)
        stdout, code, stderr = done.stdout, done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:
        stdout, code, stderr = exc.stdout or b"", None, exc.stderr or b""
    if code not in (0, None):
        raise ClientError(f"kcat consumer exited {code}: {stderr.decode(errors='replace')[-2000:]}")
    return [_kcat_got(json.loads(line)) for line in stdout.splitlines() if line.strip()]


def _kcat_got(doc: dict) -> Got:
    headers = doc.get("headers") or []
    pairs = tuple((headers[i], None if headers[i + 1] is None else headers[i + 1].encode())
                  for i in range(0, len(headers), 2))
    key = doc.get("key")
    value = doc.get("payload")
    return Got(doc["partition"], doc["offset"], None if key is None else key.encode(),
               None if value is None else value.encode(), pairs, doc["ts"])


_CONSUMERS: dict[str, Callable] = {"confluent": _consume_confluent, "kafka-python": _consume_kafka_python,
                                   "aiokafka": _consume_aiokafka, "kcat": _consume_kcat}


def consume_from_latest(client: str, bootstrap: str, topic: str, partition: int,
                        send_new: Callable[[int], None], *, timeout: float = TIMEOUT_S) -> list[Got]:
    """Start a consumer at "latest", then call ``send_new(i)`` every 200 ms until it reads a record.

    A consumer resolves "latest" asynchronously, so a single record produced
    right after starting it could land before or after that point; repeating
    the send makes the test independent of that race while still proving the
    consumer skipped everything written before it started.
    """
    result: dict = {}

    def run():
        try:
            result["got"] = consume(client, bootstrap, topic, partition, 1, start=LATEST, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    i = 0
    deadline = time.monotonic() + timeout
    while worker.is_alive() and time.monotonic() < deadline:
        send_new(i)
        i += 1
        worker.join(0.2)
    worker.join(timeout)
    if "error" in result:
        raise result["error"]
    return result.get("got", [])


# --------------------------------------------------------------------------
# Admin helpers (confluent-kafka's AdminClient)
# --------------------------------------------------------------------------


def create_topic(bootstrap: str, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})], operation_timeout=10)
    futures[name].result(TIMEOUT_S)


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    """(log start offset, high watermark) as ListOffsets reports them."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tidelog-e2e-unused"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT_S)
    finally:
        consumer.close()
