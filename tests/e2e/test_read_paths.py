"""Reads that miss the in-memory tail: checkpointed data, uncheckpointed refs, restarts.

The broker here keeps almost nothing in its tail cache and checkpoints
every 100 ms, so consumers reading old offsets go through both storage read
paths (the uncheckpointed refs held in memory, and checkpoint index objects
found with one Query), across many small ingest objects, with small fetch
sizes that cut reads at every possible place.  Every client must see the
exact log, from any starting offset or timestamp.
"""

from __future__ import annotations

import time
import uuid

import pytest

from .clients import ALL_CLIENTS, At, Rec, consume, create_topic, produce, watermarks

pytestmark = pytest.mark.slow

SETTINGS = {"TIDELOG_TAIL_CACHE_BYTES": "1", "TIDELOG_CHECKPOINT_INTERVAL_MS": "100"}
BATCHES = 12
PER_BATCH = 4


@pytest.fixture(scope="module")
def stored_log(module_brokers):
    """A broker and a topic of 12 separately flushed batches, some checkpointed, then restarted."""
    broker = module_brokers.start(env=SETTINGS)
    topic = f"paths-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 600_000
    sent: list[Rec] = []
    for b in range(BATCHES):
        recs = [Rec(f"k{i}".encode(), f"b{b:02d}-r{i}-".encode() + b"x" * (50 * b), timestamp=base + 1000 * (b * PER_BATCH + i))
                for i in range(PER_BATCH)]
        produce("confluent" if b % 2 else "kafka-python", broker.bootstrap, topic, recs,
                compression=("none", "zstd", "gzip")[b % 3])
        sent += recs
        if b in (3, 7):
            time.sleep(0.3)  # let a checkpoint move what is committed so far out of memory
    return broker, topic, sent, base


def check(got, sent, first: int) -> None:
    assert [g.offset for g in got] == list(range(first, first + len(got)))
    assert [(g.key, g.value, g.timestamp) for g in got] == [(r.key, r.value, r.timestamp) for r in sent[first:first + len(got)]]


@pytest.mark.parametrize("consumer", ALL_CLIENTS)
def test_read_everything_from_storage_with_small_fetches(stored_log, consumer: str) -> None:
    broker, topic, sent, _ = stored_log
    got = consume(consumer, broker.bootstrap, topic, 0, len(sent), max_fetch_bytes=1000)
    assert len(got) == len(sent)
    check(got, sent, 0)


@pytest.mark.parametrize("first", [1, 13, 16, 30, 47])
def test_read_from_any_offset(stored_log, first: int) -> None:
    broker, topic, sent, _ = stored_log
    got = consume("confluent", broker.bootstrap, topic, 0, len(sent) - first, start=At(offset=first))
    check(got, sent, first)


@pytest.mark.parametrize("index", [0, 5, 21, 38, 47])
def test_timestamp_lookup_through_storage(stored_log, index: int) -> None:
    broker, topic, sent, base = stored_log
    got = consume("aiokafka", broker.bootstrap, topic, 0, 1, start=At(timestamp=sent[index].timestamp - 500))
    assert [g.offset for g in got] == [index]


def test_same_log_after_a_restart(stored_log, module_brokers) -> None:
    broker, topic, sent, _ = stored_log
    assert broker.stop() == 0
    broker = module_brokers.restart(broker)
    assert watermarks(broker.bootstrap, topic, 0) == (0, len(sent))
    check(consume("kafka-python", broker.bootstrap, topic, 0, len(sent), max_fetch_bytes=1000), sent, 0)
