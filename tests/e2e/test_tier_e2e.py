"""Tiered data through a real broker and real Kafka clients.

The broker is restarted after tiering, so its tail cache is empty and every
fetch below the high watermark goes to storage: the checkpointed part of the
log comes from tier segments, rebuilt into batches, and clients must see
exactly what was produced (offsets, keys, values, headers, timestamps).

Tiering is run three ways: `tidelog tier run` as a subprocess (both
backends), and the embedded broker's own background task.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.support.cli import cli_env, run_cli

from .clients import Rec, consume, create_topic, produce

pytestmark = pytest.mark.slow

PARTITIONS = 2
FAST_CHECKPOINTS = ["--checkpoint-interval-ms", "100"]


def history(n: int) -> list[Rec]:
    base = int(time.time() * 1000) - 60_000
    return [Rec(key=None if i % 5 == 0 else b"key-%d" % (i % 7), value=None if i % 11 == 3 else b"value-%d-" % i * 20,
                headers=(("n", b"%d" % i), ("h", b"x")) if i % 3 else (), timestamp=base + i, partition=i % PARTITIONS)
            for i in range(n)]


def expected_of(recs: list[Rec], placed: list[tuple[int, int]], partition: int) -> list[tuple]:
    return sorted((offset, r.key, r.value, tuple(r.headers), r.timestamp)
                  for r, (p, offset) in zip(recs, placed) if p == partition)


def got_of(records) -> list[tuple]:
    return [(g.offset, g.key, g.value, tuple(g.headers), g.timestamp) for g in records]


def storage_flags(storage) -> list[str]:
    if storage.aws:
        return ["--s3-bucket", storage.aws["bucket"], "--dynamodb-table", storage.aws["table"],
                "--endpoint-url", storage.aws["endpoint_url"], "--region", "us-east-1"]
    return ["--data-dir", str(storage.data_dir)]


def wait_for_checkpoint() -> None:
    time.sleep(0.5)  # several --checkpoint-interval-ms 100 rounds after the last flush


def test_clients_read_tiered_data_after_tidelog_tier_run(brokers) -> None:
    broker = brokers.start(extra_args=FAST_CHECKPOINTS + ["--tier-interval-ms", "0"])
    topic = f"tiered-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    recs = history(300)
    placed = produce("confluent", broker.bootstrap, topic, recs)
    wait_for_checkpoint()
    assert broker.stop() == 0  # a graceful stop checkpoints everything

    done = run_cli("tier", "run", "--only", "tier", "--max-wait-ms", "0", "-o", "json",
                   *storage_flags(broker.storage),
                   env=cli_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"))
    assert done.code == 0, str(done)
    tier = json.loads(done.out)["tier"]
    assert not tier["errors"] and tier["totals"]["segments"] >= PARTITIONS
    assert tier["totals"]["records"] == len(recs)

    broker = brokers.restart(broker)
    for client in ("confluent", "kafka-python", "aiokafka"):
        for p in range(PARTITIONS):
            want = expected_of(recs, placed, p)
            assert got_of(consume(client, broker.bootstrap, topic, p, len(want))) == want, client


def test_the_embedded_broker_tiers_in_the_background(brokers, backend: str, tmp_path: Path) -> None:
    if backend != "embedded":
        pytest.skip("on S3/DynamoDB the Lambdas tier; the broker's task runs on the embedded store")
    broker = brokers.start(extra_args=FAST_CHECKPOINTS + ["--tier-interval-ms", "200"],
                           env={"TIDELOG_TIER_MAX_WAIT_MS": "0"})
    topic = f"bg-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    recs = history(200)
    placed = produce("confluent", broker.bootstrap, topic, recs[:-PARTITIONS])
    # The leader checkpoints right after a flush once the interval has passed, so a later
    # flush is what checkpoints the data before it (and itself).
    time.sleep(0.3)
    placed += produce("confluent", broker.bootstrap, topic, recs[-PARTITIONS:])
    tier_root = broker.storage.data_dir / "objects" / "tier"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if tier_root.exists() and len({p.parent.name for p in tier_root.rglob("*.avro*")}) == PARTITIONS:
            break
        time.sleep(0.1)
    else:
        problems = [line for line in broker.logs().splitlines() if "round done" not in line]
        pytest.fail("no tier segments for every partition after 30 s:\n" + "\n".join(problems)[-3000:])
    assert broker.stop() == 0

    broker = brokers.restart(broker)
    more = history(20)
    placed += produce("confluent", broker.bootstrap, topic, more)
    recs += more
    for p in range(PARTITIONS):
        want = expected_of(recs, placed, p)
        assert got_of(consume("confluent", broker.bootstrap, topic, p, len(want))) == want
