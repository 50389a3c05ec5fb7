"""Delete retention as clients see it: the log start moves, old offsets are out of range.

Three produce calls with explicit timestamps land in three ingest objects
(three spans); shrinking ``retention.ms`` or ``retention.bytes`` through
IncrementalAlterConfigs wakes the broker's retention task, which advances
the log start past the expired spans.  Clients then see the new start in
ListOffsets, get OFFSET_OUT_OF_RANGE below it (or reset to it), and the new
start survives a restart.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError

from .clients import At, Rec, consume, create_topic, produce, watermarks

HOUR = 3_600_000


def set_topic_config(bootstrap: str, topic: str, name: str, value: str) -> None:
    client = AdminClient({"bootstrap.servers": bootstrap})
    change = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([change])[change].result(30)


def wait_for_log_start(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        start, _ = watermarks(bootstrap, topic, 0)
        if start == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert start == expected, f"log start is {start}, expected {expected}"


def three_spans(bootstrap: str, topic: str, now: int) -> None:
    """Offsets 0-2 three hours old, 3-5 two hours old, 6-8 current, each in its own flush."""
    for age, tag in ((3 * HOUR, "a"), (2 * HOUR, "b"), (0, "c")):
        recs = [Rec(b"k", f"{tag}{i}".encode(), timestamp=now - age + i) for i in range(3)]
        produce("confluent", bootstrap, topic, recs)  # waits for the acks: one flush each


def test_retention_ms_moves_the_log_start(brokers) -> None:
    broker = brokers.start()
    topic = f"ret-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    now = int(time.time() * 1000)
    three_spans(broker.bootstrap, topic, now)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 9)  # 7-day default keeps everything

    set_topic_config(broker.bootstrap, topic, "retention.ms", str(HOUR))
    wait_for_log_start(broker.bootstrap, topic, 6)
    assert watermarks(broker.bootstrap, topic, 0) == (6, 9)

    # Below the log start: OFFSET_OUT_OF_RANGE for a consumer that may not reset...
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="none", enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 2)
        with pytest.raises(OffsetOutOfRangeError):
            for _ in range(50):
                consumer.poll(200)
    finally:
        consumer.close()
    # ...while a consumer allowed to reset lands on the new log start...
    assert _reset_to_earliest(broker.bootstrap, topic, 2, 3) == [(6, b"c0"), (7, b"c1"), (8, b"c2")]
    # ...and "earliest" is the new log start for every client.
    for client in ("confluent", "aiokafka", "kcat"):
        from .clients import KCAT

        if client == "kcat" and KCAT is None:
            continue
        got = consume(client, broker.bootstrap, topic, 0, 3)
        assert [(g.offset, g.value) for g in got] == [(6, b"c0"), (7, b"c1"), (8, b"c2")], client
    # A timestamp before everything resolves to the log start, not to deleted data.
    got = consume("kafka-python", broker.bootstrap, topic, 0, 1, start=At(timestamp=now - 10 * HOUR))
    assert [g.offset for g in got] == [6]

    # The log start is durable, and producing continues at the end.
    assert broker.stop() == 0
    broker = brokers.restart(broker)
    assert watermarks(broker.bootstrap, topic, 0) == (6, 9)
    assert produce("kafka-python", broker.bootstrap, topic, [Rec(b"k", b"d0")]) == [(0, 9)]


def _reset_to_earliest(bootstrap: str, topic: str, offset: int, count: int) -> list:
    """confluent-kafka assigned below the log start with auto.offset.reset=earliest."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as TP

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tidelog-e2e-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TP(topic, 0, offset)])
        out = []
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
        return [(m.offset(), m.value()) for m in out]
    finally:
        consumer.close()


def test_retention_bytes_keeps_the_newest_data(brokers) -> None:
    broker = brokers.start()
    topic = f"retb-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    three_spans(broker.bootstrap, topic, int(time.time() * 1000))
    # One byte: delete oldest spans while what is left is still at least one byte.
    set_topic_config(broker.bootstrap, topic, "retention.bytes", "1")
    wait_for_log_start(broker.bootstrap, topic, 6)
    assert [g.value for g in consume("confluent", broker.bootstrap, topic, 0, 3)] == [b"c0", b"c1", b"c2"]
