"""The Lambda handlers, called directly against S3 + DynamoDB on moto (invoking a
Lambda needs Docker, which moto cannot provide)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Iterator

import pytest

from tidelog.lambdas import handlers
from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import SystemClock
from tidelog.storage.errors import InvalidRequest
from tidelog.storage.factory import StorageConfig, open_storage
from tidelog.storage.reader import LogReader
from tidelog.storage.records import Record
from tidelog.storage.tier_state import load_partition
from tests.integration.test_tier_harness import History, read_log
from tests.support.stores import unique_name

pytestmark = pytest.mark.aws

HOUR = 3_600_000


@dataclass
class Context:
    """The part of the Lambda context object the handlers use."""

    remaining_ms: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def deployment(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[StorageConfig]:
    name = unique_name("tier")
    config = StorageConfig(data_dir=None, s3_bucket=name, dynamodb_table=name, endpoint_url=moto_endpoint)

    async def create() -> None:
        storage = await open_storage(config)
        try:
            await storage.ensure(create=True)
        finally:
            await storage.close()
    asyncio.run(create())
    monkeypatch.setenv("TIDELOG_S3_BUCKET", name)
    monkeypatch.setenv("TIDELOG_DYNAMODB_TABLE", name)
    monkeypatch.setenv("TIDELOG_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    try:
        yield config
    finally:
        handlers.close_all()


def produce(config: StorageConfig, configs: dict[str, str]) -> tuple[str, list[Record], int]:
    """Six checkpointed flushes, the first three three hours old; the broker then shuts down."""
    async def run():
        storage = await open_storage(config)
        try:
            clock = SystemClock()
            h = History(storage, clock)
            await h.start_session()
            await h.create("t", 1, configs)
            for i in range(6):
                ts = clock.now_ms() - (3 * HOUR if i < 3 else 0)
                await h.flush({("t", 0): [[Record(0, ts, b"key-%d" % (j % 3), b"v%d-%d" % (i, j)) for j in range(5)]]})
                await h.checkpoint()
            end = h.led[("t", 0)].next_offset
            await h.release_all()
            return h.topic_id("t"), h.expected[("t", 0)], end
        finally:
            await storage.close()
    return asyncio.run(run())


def read_back(config: StorageConfig, topic_id: str, end: int) -> tuple[int, list[Record]]:
    async def run():
        storage = await open_storage(config)
        try:
            view = await load_partition(storage.meta, topic_id, 0)
            reader = LogReader(storage.objects, storage.meta)
            return view.log_start, await read_log(reader, topic_id, 0, view.log_start, end)
        finally:
            await storage.close()
    return asyncio.run(run())


def test_every_handler_runs_its_job_and_returns_json(deployment: StorageConfig) -> None:
    topic_id, expected, end = produce(deployment, {"retention.ms": str(HOUR)})
    options = {"max_wait_ms": 0, "target_bytes": 1, "grace_ms": 0, "min_age_ms": 0}  # a segment per flush

    tiered = handlers.tier_handler({"options": options}, Context())
    assert json.loads(json.dumps(tiered)) == tiered
    assert tiered["totals"]["segments"] >= 3 and not tiered["errors"]

    kept = handlers.retention_handler({"options": options}, Context())
    [result] = kept["results"]
    assert result["state"] == "advanced" and result["log_start"] == 15 and result["tier_deleted"] >= 1

    assert handlers.compaction_handler({"options": options}, Context())["results"] == []  # not a compacted topic

    swept = handlers.gc_handler({"options": options}, Context())
    # Segments below the new log start go at once; ingest objects once their commit items are gone.
    assert swept["state"] == "swept" and swept["commit_items_deleted"] == 5
    assert swept["objects_deleted"]["tier"] == 3 and "ingest" not in swept["objects_deleted"]
    swept = handlers.gc_handler({"options": options}, Context())
    assert swept["objects_deleted"] == {"ingest": 5}  # the sixth is the proof its session's flushes settled

    assert len(handlers._RUNTIMES) == 1  # adapters built once per container, reused by every call
    log_start, records = read_back(deployment, topic_id, end)
    assert log_start == 15 and records == expected[15:]


def test_compaction_handler_compacts_a_compacted_topic(deployment: StorageConfig) -> None:
    topic_id, expected, end = produce(deployment, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
    handlers.tier_handler({"options": {"max_wait_ms": 0}}, Context())
    summary = handlers.compaction_handler({"topics": ["t"]}, Context())
    assert summary["results"][0]["state"] == "compacted"
    _, records = read_back(deployment, topic_id, end)
    latest = {r.key: r.offset for r in expected}
    assert records == [r for r in expected if latest[r.key] == r.offset]


def test_the_event_overrides_the_environment_and_bad_events_fail(deployment: StorageConfig,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDELOG_S3_BUCKET", "no-such-bucket")
    event = {"bucket": deployment.s3_bucket, "table": deployment.dynamodb_table, "options": {"max_wait_ms": 0}}
    assert handlers.tier_handler(event, Context())["partitions"] == 0
    with pytest.raises(InvalidRequest):
        handlers.tier_handler({**event, "options": {"bogus": 1}}, Context())
    with pytest.raises(InvalidRequest):
        handlers.tier_handler({**event, "topics": "t"}, Context())
    monkeypatch.delenv("TIDELOG_S3_BUCKET")
    with pytest.raises(InvalidRequest):
        handlers.gc_handler({}, Context())


def test_a_short_deadline_stops_starting_partitions(deployment: StorageConfig) -> None:
    async def create_topic() -> None:
        storage = await open_storage(deployment)
        try:
            await Catalog(storage.meta).create("t", 3)
        finally:
            await storage.close()
    asyncio.run(create_topic())
    summary = handlers.tier_handler({"options": {"max_wait_ms": 0}}, Context(remaining_ms=1_000))
    assert (summary["partitions"], summary["skipped"], summary["results"]) == (3, 3, [])
    summary = handlers.tier_handler({"options": {"max_wait_ms": 0}}, Context())
    assert (summary["partitions"], summary["skipped"], summary["results"]) == (3, 0, [])
