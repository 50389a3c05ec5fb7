"""Durability across broker restarts: SIGTERM (graceful) and SIGKILL (crash), on both backends.

The invariant under test: a producer is acknowledged only after its data is
in an ingest object *and* the commit-log item naming that object is written,
so whatever a client saw acknowledged is readable after any restart, exactly
once (idempotent producer state is rebuilt from the ingest objects), in
order, and new writes continue after it without reusing an offset.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from .clients import Rec, consume, create_topic, produce, watermarks

pytestmark = pytest.mark.slow

PARTITIONS = 2


def idempotent_producer(bootstrap: str, **extra) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
                     "message.timeout.ms": 60_000, "retry.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
                     **extra})


def read_all(bootstrap: str, topic: str) -> dict[int, list]:
    """Every record of every partition, from the log start to the high watermark."""
    out = {}
    for p in range(PARTITIONS):
        start, end = watermarks(bootstrap, topic, p)
        got = consume("confluent", bootstrap, topic, p, end - start)
        assert [g.offset for g in got] == list(range(start, end)), f"partition {p} has gaps or is short"
        out[p] = got
    return out


def assert_exactly(read: dict[int, list], delivered: dict[bytes, tuple[int, int]]) -> None:
    """Every delivered value is stored once, at the offset it was acknowledged with; nothing else is there."""
    seen = {}
    for p, records in read.items():
        for g in records:
            assert g.value not in seen, f"{g.value!r} stored twice: {seen[g.value]} and {(p, g.offset)}"
            seen[g.value] = (p, g.offset)
    assert seen == delivered


def test_sigterm_restart_keeps_every_acknowledged_record(brokers) -> None:
    broker = brokers.start()
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    delivered: dict[bytes, tuple[int, int]] = {}

    def on_delivery(err, msg):
        assert err is None, err
        delivered[msg.value()] = (msg.partition(), msg.offset())

    producer = idempotent_producer(broker.bootstrap)
    for round_ in range(3):
        for i in range(20):
            producer.produce(topic, key=f"k{i % 5}".encode(), value=f"r{round_}-{i}".encode(), on_delivery=on_delivery)
        assert producer.flush(30) == 0
    assert len(delivered) == 60
    hwms = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(PARTITIONS)}

    assert broker.stop() == 0
    broker = brokers.restart(broker)

    assert {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(PARTITIONS)} == hwms
    assert_exactly(read_all(broker.bootstrap, topic), delivered)
    # Producing continues after the recovered end, with no offset reused.
    for p in range(PARTITIONS):
        acked = produce("kafka-python", broker.bootstrap, topic, [Rec(b"after", f"after-{p}".encode(), partition=p)])
        assert acked == [(p, hwms[p])]
        delivered[f"after-{p}".encode()] = (p, hwms[p])
    # The same idempotent producer keeps going across the restart (its state was kept).
    producer.produce(topic, key=b"k0", value=b"late", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert_exactly(read_all(broker.bootstrap, topic), delivered)


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_restart_under_load_loses_nothing_acknowledged_and_duplicates_nothing(brokers, how: str) -> None:
    """The broker goes away with records in flight; the same idempotent producer carries on.

    SIGKILL: nothing acknowledged may be lost.  SIGTERM: the broker answers
    what it flushed and refuses the rest (NOT_LEADER_OR_FOLLOWER), which the
    producer retries after the restart.
    """
    broker = brokers.start()
    topic = f"crash-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    delivered: dict[bytes, tuple[int, int]] = {}
    failed: list = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                failed.append(err)
            else:
                delivered[msg.value()] = (msg.partition(), msg.offset())

    producer = idempotent_producer(broker.bootstrap)
    sent = 0
    acked_before_kill: dict[bytes, tuple[int, int]] = {}

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            producer.produce(topic, key=f"k{sent % 7}".encode(), value=f"v{sent:05d}".encode(), on_delivery=on_delivery)
            sent += 1
        producer.poll(0)

    # Keep records in flight while the broker dies: some acknowledged, some not.
    deadline = time.monotonic() + 30
    while len(delivered) < 150 and time.monotonic() < deadline:
        send(10)
        producer.poll(0.005)
    send(40)
    with lock:
        acked_before_kill = dict(delivered)
    if how == "sigkill":
        broker.kill()
    else:
        assert broker.stop() == 0
    assert len(acked_before_kill) >= 150

    broker = brokers.restart(broker)
    send(40)  # the same producer carries on: retries, then new records
    assert producer.flush(60) == 0
    assert not failed, failed[:3]
    assert len(delivered) == sent

    stored = read_all(broker.bootstrap, topic)
    # Nothing acknowledged before the crash moved or vanished...
    for value, where in acked_before_kill.items():
        assert delivered[value] == where
    # ...and every delivered record is there exactly once, nothing else.
    assert_exactly(stored, delivered)
    # Per-key order survives the retries: each key's values increase in its partition.
    for records in stored.values():
        last: dict[bytes, bytes] = {}
        for g in records:
            assert g.value > last.get(g.key, b""), f"key {g.key!r} out of order at offset {g.offset}"
            last[g.key] = g.value


def test_sigkill_twice_then_sigterm(brokers) -> None:
    """Recovery of a recovered log: crash, restart, write, crash again, restart, stop cleanly."""
    broker = brokers.start()
    topic = f"twice-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    expected = []
    for round_ in range(3):
        recs = [Rec(b"k", f"round{round_}-{i}".encode(), partition=0) for i in range(5)]
        acked = produce("aiokafka", broker.bootstrap, topic, recs)
        assert [o for _, o in acked] == list(range(len(expected), len(expected) + 5))
        expected += recs
        if round_ < 2:
            broker.kill()
        else:
            assert broker.stop() == 0
        broker = brokers.restart(broker)
    got = consume("kafka-python", broker.bootstrap, topic, 0, len(expected))
    assert [g.value for g in got] == [r.value for r in expected]
    assert watermarks(broker.bootstrap, topic, 0) == (0, 15)
