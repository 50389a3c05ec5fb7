"""The core consumer-group scenarios on S3 + DynamoDB (moto), where every generation and
every fenced offset commit is a DynamoDB conditional write.

The embedded store runs the full set in `test_groups_clients`; here the
exactly-once split with three client libraries, and a member crash, run once
against a broker whose metadata store is DynamoDB.
"""

from __future__ import annotations

import time

import pytest

from tests.support.groups import (
    PARTITIONS,
    Consumption,
    Feeder,
    create_topic,
    describe_all,
    split_evenly,
    start,
    three_clients_read_every_record_once,
    wait_until,
    workers,  # noqa: F401 - fixture
)

SESSION_MS = 6000

pytestmark = [pytest.mark.aws, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def backend() -> str:
    return "aws"


def test_three_client_libraries_read_every_record_once_on_dynamodb(broker, tmp_path, workers):
    three_clients_read_every_record_once(broker.bootstrap, tmp_path, workers)


def test_crashed_member_is_replaced_and_nothing_is_skipped_on_dynamodb(broker, tmp_path, workers):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    survivor = start(workers, "kafka-python", broker.bootstrap, group, topic, tmp_path, session_timeout_ms=SESSION_MS)
    crasher = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, session_timeout_ms=SESSION_MS)
    with Feeder(broker.bootstrap, topic, PARTITIONS, per_second=100) as feeder:
        wait_until(lambda: split_evenly([survivor, crasher], topic), 60, "two members sharing", describe_all(workers))
        wait_until(lambda: len(crasher.records()) > 30, 30, "the doomed member consuming", describe_all(workers))
        crasher.kill()
        wait_until(lambda: len(survivor.owned()) == PARTITIONS, 2 * SESSION_MS / 1000 + 5,
                   "the survivor owning all partitions", describe_all(workers))
        time.sleep(1)
    wait_until(lambda: not feeder.missing(Consumption.of([survivor, crasher])), 30, "every record consumed",
               describe_all(workers))
    seen = Consumption.of([survivor, crasher])
    assert seen.rereads_below_commit([survivor, crasher]) == []
