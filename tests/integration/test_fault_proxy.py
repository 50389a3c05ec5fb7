"""The fault proxy itself: each action does exactly what the fault tests rely on."""

from __future__ import annotations

import json
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from tests.support.fault_proxy import FaultProxy, classify

pytestmark = pytest.mark.aws


@pytest.fixture
def proxy(moto_endpoint: str):
    with FaultProxy(moto_endpoint) as p:
        yield p


def clients(url: str, attempts: int = 1):
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts}, s3={"addressing_style": "path"})
    kw = dict(endpoint_url=url, region_name="us-east-1", config=config)
    return boto3.client("s3", **kw), boto3.client("dynamodb", **kw)


def test_classify_names_the_aws_operation() -> None:
    assert classify("PUT", "/b/k/x.avro", {}) == ("s3", "PutObject")
    assert classify("PUT", "/b/k?partNumber=1&uploadId=u", {}) == ("s3", "UploadPart")
    assert classify("POST", "/b/k?uploadId=u", {}) == ("s3", "CompleteMultipartUpload")
    assert classify("GET", "/b?list-type=2&prefix=x", {}) == ("s3", "ListObjectsV2")
    assert classify("HEAD", "/b", {}) == ("s3", "HeadBucket")
    target = {"X-Amz-Target": "DynamoDB_20120810.TransactWriteItems"}
    assert classify("POST", "/", target) == ("dynamodb", "TransactWriteItems")


def test_each_action_on_s3_puts(proxy: FaultProxy, moto_endpoint: str) -> None:
    s3, _ = clients(proxy.url)
    direct, _ = clients(moto_endpoint)
    bucket = f"proxy-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)

    proxy.set_rules([{"name": "slow", "action": "error", "service": "s3", "operation": "PutObject"}])
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    assert err.value.response["Error"]["Code"] == "SlowDown"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    proxy.set_rules([{"name": "reset", "action": "reset", "service": "s3", "operation": "PutObject"}])
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        s3.put_object(Bucket=bucket, Key="b", Body=b"2")

    proxy.set_rules([{"name": "drop", "action": "drop_reply", "service": "s3", "operation": "PutObject"}])
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        s3.put_object(Bucket=bucket, Key="c", Body=b"3")

    proxy.set_rules([{"name": "late", "action": "latency", "latency_ms": 50, "service": "s3"}])
    s3.put_object(Bucket=bucket, Key="d", Body=b"4")
    stored = {o["Key"] for o in direct.list_objects_v2(Bucket=bucket).get("Contents", [])}
    # Only a dropped reply (and a plain success) reached moto.
    assert stored == {"c", "d"}
    assert [proxy.fired(n) for n in ("slow", "reset", "drop")] == [1, 1, 1] and proxy.fired("late") >= 1


def test_dynamodb_503_is_retried_by_botocore_and_every_nth_is_exact(proxy: FaultProxy) -> None:
    _, ddb = clients(proxy.url, attempts=3)
    table = f"proxy-{uuid.uuid4().hex[:12]}"
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    proxy.set_rules([{"name": "busy", "action": "error", "service": "dynamodb", "operation": "PutItem",
                      "every": 2}])
    for i in range(5):
        response = ddb.put_item(TableName=table, Item={"pk": {"S": str(i)}})
        # Requests 2, 4, 6, 8 get a 503; botocore retries each once, with success.
        assert response["ResponseMetadata"]["RetryAttempts"] == (0 if i == 0 else 1)
    assert proxy.fired("busy") == 4


def test_rules_can_be_changed_over_http(proxy: FaultProxy) -> None:
    rules = {"rules": [{"name": "x", "action": "error", "service": "s3", "operation": "GetObject"}]}
    req = urllib.request.Request(f"{proxy.url}/__faults", data=json.dumps(rules).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert [r["name"] for r in json.load(resp)["rules"]] == ["x"]
    with urllib.request.urlopen(urllib.request.Request(f"{proxy.url}/__faults", method="DELETE"), timeout=5) as resp:
        assert json.load(resp)["rules"] == []
