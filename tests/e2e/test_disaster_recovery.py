"""Cross-region recovery from a copied bucket alone, through real brokers and a real client.

The primary region's broker writes through two leader epochs (a graceful
restart moves every partition to a new leader epoch), a fenced leader's
uncommitted flush is left behind with an older epoch over offsets that were
committed later, and the bucket is copied object by object (what S3
replication does; moto stores replication rules but does not replicate).
`tidelog recover` then builds a new table from the copy, and a broker on
the copy + new table must serve exactly the acknowledged records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from tidelog.storage import keys
from tidelog.storage.records import Record, build_batches, patch_batch
from tidelog.storage.segments import BatchEntry, encode_ingest_segment

from tests.support.ports import free_port

from .clients import Rec, consume, create_topic, produce, watermarks
from .conftest import REGION, REPO_ROOT, Brokers, Storage, _subprocess_env

pytestmark = [pytest.mark.aws, pytest.mark.slow]

PARTITIONS = 3


@pytest.fixture
def aws_brokers(request: pytest.FixtureRequest, tmp_path: Path):
    factory = Brokers("aws", tmp_path, request.getfixturevalue("moto_url"))
    try:
        yield factory
    finally:
        problems = factory.close()
    assert not problems, "\n".join(problems)


def s3(moto_url: str):
    return boto3.client("s3", endpoint_url=moto_url, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def copy_bucket(moto_url: str, source: str, target: str) -> int:
    client = s3(moto_url)
    copied = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source):
        for obj in page.get("Contents", []):
            client.copy_object(Bucket=target, Key=obj["Key"], CopySource={"Bucket": source, "Key": obj["Key"]})
            copied += 1
    return copied


def fenced_leaders_flush(topic: str, partition: int, base_offset: int, leader_epoch: int) -> bytes:
    """An ingest object as a fenced leader would leave it: PUT, never committed."""
    batch = bytearray(build_batches([Record(i, 1_700_000_000_000, b"k", b"orphan-%d" % i) for i in range(5)])[0])
    patch_batch(batch, 0, base_offset, leader_epoch)
    entry = BatchEntry.from_batch(bytes(batch))
    return encode_ingest_segment([(topic, partition, [entry])], writer="0-1", seq=999_999,
                                 created_ms=1_700_000_000_000).data


def scrape(port: int, metric: str, timeout_s: float = 20) -> float:
    """The metric's value once the broker has measured it (the first measurement is at start-up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                for line in resp.read().decode().splitlines():
                    if line.startswith(metric + " ") and float(line.split()[1]) > 0:
                        return float(line.split()[1])
        except OSError:
            pass
        if time.monotonic() > deadline:
            return 0.0
        time.sleep(0.1)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidelog.cli", *args], env=_subprocess_env(), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_recovery_from_a_copied_bucket_serves_every_record_and_no_orphan(aws_brokers: Brokers) -> None:
    moto_url = aws_brokers.moto_url
    primary = aws_brokers.storage()
    topic = f"dr-{uuid.uuid4().hex[:8]}"

    broker = aws_brokers.start(primary)
    create_topic(broker.bootstrap, topic, PARTITIONS)
    first = [Rec(b"k%d" % i, b"epoch1-%d" % i, partition=i % PARTITIONS) for i in range(60)]
    placed = produce("confluent", broker.bootstrap, topic, first, idempotent=True)
    broker.stop()
    # Every partition gets a new leader epoch.  The broker also watches the (still empty) replica.
    replica = f"tidelog-dr-{uuid.uuid4().hex}"[:63]
    s3(moto_url).create_bucket(Bucket=replica)
    metrics_port = free_port()
    broker = aws_brokers.restart(broker, extra_args=["--replica-bucket", replica, "--metrics-port", str(metrics_port)])
    lag = scrape(metrics_port, "tidelog_replication_missing_objects")
    assert lag > 0, "the replica holds none of the epoch-1 ingest objects"
    assert scrape(metrics_port, "tidelog_replication_lag_seconds") > 0
    second = [Rec(b"k%d" % i, b"epoch2-%d" % i, partition=i % PARTITIONS) for i in range(45)]
    placed += produce("confluent", broker.bootstrap, topic, second, idempotent=True)
    broker.stop()
    expected = {(p, o): r.value for r, (p, o) in zip(first + second, placed)}
    epoch2_start = min(o for r, (p, o) in zip(second, placed[len(first):]) if p == 0)

    # The leader of epoch 1 was fenced with a flush in flight over what epoch 2 then wrote.
    orphan = keys.ingest_object_key("0-1", 999_999)
    s3(moto_url).put_object(Bucket=primary.aws["bucket"], Key=orphan,
                            Body=fenced_leaders_flush(topic, 0, epoch2_start, leader_epoch=1))

    assert copy_bucket(moto_url, primary.aws["bucket"], replica) > 2
    table = f"tidelog-dr-{uuid.uuid4().hex}"[:63]
    done = run_cli("recover", "--bucket", replica, "--region", REGION, "--endpoint-url", moto_url,
                   "--dynamodb-table", table, "--output", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["object"] for r in report["rejected"]] == [orphan]
    assert report["corrupt"] == [] and all(p["holes"] == [] for p in report["partitions"])
    assert report["topics"] == {topic: PARTITIONS}

    recovered = Storage.__new__(Storage)
    recovered.backend, recovered.data_dir = "aws", None
    recovered.aws = {"bucket": replica, "table": table, "endpoint_url": moto_url}
    dr = aws_brokers.start(recovered)
    got = {}
    for p in range(PARTITIONS):
        start, end = watermarks(dr.bootstrap, topic, p)
        records = consume("confluent", dr.bootstrap, topic, p, end - start)
        assert [g.offset for g in records] == list(range(start, end))
        got.update({(p, g.offset): g.value for g in records})
    assert got == expected

    # The recovered cluster takes writes after the recovered end, under keys no old object uses.
    more = produce("confluent", dr.bootstrap, topic, [Rec(b"k", b"after-recovery", partition=0)], idempotent=True)
    assert more == [(0, max(o for p, o in expected if p == 0) + 1)]
    assert consume("confluent", dr.bootstrap, topic, 0, 1, start=_at(more[0][1]))[0].value == b"after-recovery"


def _at(offset: int):
    from .clients import At

    return At(offset=offset)
