"""Behaviour only the S3/DynamoDB adapters and the moto test server have.

The generic port contract runs in ``test_contract_*.py``; this file covers
what lies beneath it: the multipart path, bucket/table bootstrap, the
condition translation checked against `conditions.evaluate`, retry and
error translation, and the linearizable moto server itself.  Everything runs
against the session's moto server (``moto_endpoint`` from conftest).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Iterator

import boto3
import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from tidelog.storage import conditions
from tidelog.storage.adapters import aws_errors, dynamodb, s3
from tidelog.storage.adapters.dynamodb import DynamoMetaStore, plan_key_condition, prefix_end
from tidelog.storage.adapters.s3 import S3ObjectStore
from tidelog.storage.conditions import ABSENT, Check, Compare, Condition, Delete, Put
from tidelog.storage.cost import item_size, write_units
from tidelog.storage.errors import (
    AlreadyExists,
    Ambiguous,
    Conflict,
    Internal,
    InvalidRequest,
    NotFound,
    TidelogError,
    Unavailable,
)
from tidelog.storage.model import Item

pytestmark = pytest.mark.aws

# `tests.support` is imported inside the tests that need it: under the plain
# `pytest` entry point the repository root joins sys.path only after
# collection (when the `tests` package is set up), as in conftest.py.

MiB = 1024 * 1024
REGION = "us-east-1"


def unique(kind: str) -> str:
    return f"tidelog-aws-{kind}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def boto(moto_endpoint: str) -> Callable[[str], Any]:
    """Plain (blocking) boto3 clients for looking behind the adapters' backs."""

    def make(service: str, region: str = REGION) -> Any:
        return boto3.session.Session().client(service, endpoint_url=moto_endpoint, region_name=region)

    return make


@pytest.fixture
async def bucket_store(moto_endpoint: str) -> Any:
    store = await S3ObjectStore.open(
        unique("mp"), endpoint_url=moto_endpoint, region=REGION, multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    await store.ensure(create=True)
    yield store
    await store.close()


@pytest.fixture
async def table_store(moto_endpoint: str) -> Any:
    store = await DynamoMetaStore.open(unique("t"), endpoint_url=moto_endpoint, region=REGION)
    await store.ensure(create=True)
    yield store
    await store.close()


def client_error(code: str, status: int, *, retries: int = 0, op: str = "PutObject", **extra: Any) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "synthetic"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
        **extra,
    }
    return ClientError(response, op)  # type: ignore[arg-type]


def force_one_retry(client: Any, event: str) -> list[int]:
    """Make botocore resend a request once even though the first attempt succeeded.

    That is the lost-response case: the write happened, the caller never heard.
    """
    seen: list[int] = []

    def handler(attempts: int, **_: Any) -> int | None:
        seen.append(attempts)
        return 0 if attempts == 1 else None  # 0 = retry now

    client.meta.events.register_first(event, handler)
    return seen


async def open_uploads(boto: Callable[[str], Any], bucket: str) -> list[Any]:
    response = await asyncio.to_thread(boto("s3").list_multipart_uploads, Bucket=bucket)
    return response.get("Uploads", [])


# --- the moto server -------------------------------------------------------------------
def test_serialized_app_runs_one_request_at_a_time_body_included() -> None:
    from tests.support.moto_server import SerializedApp

    active = 0
    peak = 0
    closed = []
    guard = threading.Lock()

    def enter() -> None:
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)

    def leave() -> None:
        nonlocal active
        with guard:
            active -= 1

    class Body:
        """A response body that is still 'inside the app' until it is closed."""

        def __init__(self, n: int) -> None:
            self.n = n

        def __iter__(self) -> Iterator[bytes]:
            for i in range(3):
                time.sleep(0.002)
                yield f"{self.n}:{i};".encode()

        def close(self) -> None:
            closed.append(self.n)
            leave()

    def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        enter()
        start_response("200 OK", [("X-N", str(environ["n"]))])
        return Body(environ["n"])

    app = SerializedApp(inner)
    results: dict[int, tuple[str, list[tuple[str, str]], bytes]] = {}

    def call(n: int) -> None:
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            seen["status"], seen["headers"] = status, headers

        body = b"".join(app({"n": n}, start_response))
        results[n] = (seen["status"], seen["headers"], body)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 1
    assert sorted(closed) == list(range(8))
    assert results == {n: ("200 OK", [("X-N", str(n))], f"{n}:0;{n}:1;{n}:2;".encode()) for n in range(8)}


def test_cas_increments_over_http_lose_nothing(boto: Callable[[str], Any]) -> None:
    """8 threads x 25 compare-and-set increments of one counter: the server must apply exactly 200."""
    table = unique("cas")
    setup = boto("dynamodb")
    setup.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    setup.put_item(TableName=table, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
    clients = [boto("dynamodb") for _ in range(8)]  # created up front: boto3 sessions are not thread-safe
    successes = [0] * len(clients)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        client = clients[index]
        try:
            got = client.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)
            n = int(got["Item"]["n"]["N"])
            while successes[index] < 25:
                try:
                    client.put_item(
                        TableName=table,
                        Item={"pk": {"S": "counter"}, "n": {"N": str(n + 1)}},
                        ConditionExpression="n = :old",
                        ExpressionAttributeValues={":old": {"N": str(n)}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise
                    n = int(exc.response["Item"]["n"]["N"])  # the winner's value, no re-read needed
                    time.sleep(random.random() * 0.01)  # jitter, as a real CAS loop would
                    continue
                n += 1
                successes[index] += 1
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    final = setup.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)
    assert sum(successes) == 200
    assert int(final["Item"]["n"]["N"]) == 200  # every acknowledged increment is there


def test_server_lifecycle_and_reset(fake_aws_env: None) -> None:
    from tests.support.moto_server import MotoServer

    with MotoServer() as server:
        url = server.url
        client = boto3.session.Session().client("s3", endpoint_url=url, region_name=REGION)
        client.create_bucket(Bucket="before-reset")
        server.reset()
        assert client.list_buckets()["Buckets"] == []
    assert server.returncode == 0  # SIGTERM is a clean exit
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/moto-api/", timeout=2)


def test_start_failure_reports_the_server_stderr() -> None:
    from tests.support.moto_server import MotoServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MotoServer(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="exited during start-up") as raised:
            server.start()
    assert "in use" in str(raised.value)
    server.stop()  # harmless after a failed start


def test_server_exits_when_its_parent_dies_without_cleaning_up() -> None:
    """A test process killed hard runs no atexit hooks; the server must still go away."""
    script = (
        "import os, sys\n"
        "from tests.support.moto_server import MotoServer\n"
        "server = MotoServer()\n"
        "server.start()\n"
        "print(server._proc.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    from tests.support.moto_server import REPO_ROOT

    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    orphan = int(out.stdout.strip())
    deadline = time.monotonic() + 20
    while process_alive(orphan):
        if time.monotonic() > deadline:
            os.kill(orphan, signal.SIGKILL)
            pytest.fail(f"moto server outlived its parent pid={orphan}")
        time.sleep(0.1)


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# --- S3: multipart ------------------------------------------------------------------------
async def test_multipart_round_trip_and_conflict(bucket_store: S3ObjectStore, boto: Callable[[str], Any]) -> None:
    data = os.urandom(12 * MiB)
    etag = await bucket_store.put_if_absent("big/object", data)
    assert etag.endswith("-3")  # three parts: 5 + 5 + 2 MiB
    requests = bucket_store.stats.requests
    assert (requests["CreateMultipartUpload"], requests["UploadPart"], requests["CompleteMultipartUpload"]) == (1, 3, 1)
    assert "PutObject" not in requests
    assert await bucket_store.get("big/object") == data
    assert await bucket_store.get("big/object", 5 * MiB - 10, 5 * MiB + 10) == data[5 * MiB - 10 : 5 * MiB + 10]
    assert (await bucket_store.head("big/object")).size == len(data)

    with pytest.raises(AlreadyExists):
        await bucket_store.put_if_absent("big/object", os.urandom(11 * MiB))
    assert await bucket_store.get("big/object") == data
    assert requests["AbortMultipartUpload"] == 1
    assert await open_uploads(boto, bucket_store.bucket) == []


async def test_below_threshold_is_a_single_put(bucket_store: S3ObjectStore) -> None:
    data = os.urandom(5 * MiB - 1)
    await bucket_store.put_if_absent("small", data)
    assert bucket_store.stats.requests["PutObject"] == 1
    assert "CreateMultipartUpload" not in bucket_store.stats.requests
    assert await bucket_store.get("small") == data


async def test_failed_part_aborts_the_upload(
    bucket_store: S3ObjectStore, boto: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload_part = bucket_store._client.upload_part

    async def flaky_upload_part(**params: Any) -> Any:
        if params["PartNumber"] == 2:
            raise client_error("InternalError", 500, op="UploadPart")
        return await real_upload_part(**params)

    monkeypatch.setattr(bucket_store._client, "upload_part", flaky_upload_part)
    with pytest.raises(Unavailable) as raised:
        await bucket_store.put_if_absent("never", os.urandom(12 * MiB))
    # Nothing became visible, so the failure is retryable, not ambiguous.
    assert not isinstance(raised.value, Ambiguous)
    with pytest.raises(NotFound):
        await bucket_store.head("never")
    assert await open_uploads(boto, bucket_store.bucket) == []


async def test_cancelled_put_aborts_the_upload(
    bucket_store: S3ObjectStore, boto: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload_part = bucket_store._client.upload_part
    stuck = asyncio.Event()

    async def hanging_upload_part(**params: Any) -> Any:
        if params["PartNumber"] == 3:
            stuck.set()
            await asyncio.Event().wait()
        return await real_upload_part(**params)

    monkeypatch.setattr(bucket_store._client, "upload_part", hanging_upload_part)
    task = asyncio.create_task(bucket_store.put_if_absent("cancelled", os.urandom(12 * MiB)))
    await stuck.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bucket_store.stats.requests["AbortMultipartUpload"] == 1
    assert await open_uploads(boto, bucket_store.bucket) == []
    with pytest.raises(NotFound):
        await bucket_store.head("cancelled")


async def test_part_settings_are_validated() -> None:
    with pytest.raises(InvalidRequest):
        await S3ObjectStore.open("x-bucket", part_size=4 * MiB)  # below S3's minimum part
    with pytest.raises(InvalidRequest):
        await S3ObjectStore.open("x-bucket", multipart_threshold=5 * MiB, part_size=8 * MiB)


# --- S3: conditional puts and retries -------------------------------------------------------
async def test_put_whose_first_attempt_landed_is_ambiguous(bucket_store: S3ObjectStore) -> None:
    attempts = force_one_retry(bucket_store._client, "needs-retry.s3.PutObject")
    with pytest.raises(Ambiguous):
        await bucket_store.put_if_absent("landed", b"ours")
    assert attempts[:2] == [1, 2]
    assert bucket_store.stats.requests["PutObject"] == 2  # retries are requests too
    assert await bucket_store.get("landed") == b"ours"


async def test_concurrent_conditional_conflict_is_unavailable(
    bucket_store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answers 409 when two conditional writes on one key overlap; moto never does, so fake it."""

    async def conflicting_put(**params: Any) -> Any:
        raise client_error("ConditionalRequestConflict", 409)

    monkeypatch.setattr(bucket_store._client, "put_object", conflicting_put)
    with pytest.raises(Unavailable) as raised:
        await bucket_store.put_if_absent("contended", b"x")
    assert not isinstance(raised.value, (Ambiguous, Conflict))
    assert isinstance(raised.value.__cause__, ClientError)


# --- bootstrap ---------------------------------------------------------------------------
async def test_bucket_bootstrap(moto_endpoint: str) -> None:
    for region in (REGION, "eu-west-1"):  # eu-west-1 needs a LocationConstraint
        store = await S3ObjectStore.open(unique("boot"), endpoint_url=moto_endpoint, region=region)
        try:
            with pytest.raises(NotFound, match="tidelog init"):
                await store.ensure(create=False)
            await store.ensure(create=True)
            await store.ensure(create=True)
            await store.ensure(create=False)
            await store.put_if_absent("k", b"v")
            assert await store.get("k") == b"v"
        finally:
            await store.close()


async def test_table_bootstrap(moto_endpoint: str) -> None:
    async with await DynamoMetaStore.open(unique("boot"), endpoint_url=moto_endpoint, region=REGION) as store:
        with pytest.raises(NotFound, match="tidelog init"):
            await store.ensure(create=False)
        await store.ensure(create=True)
        await store.ensure(create=True)
        await store.ensure(create=False)
        assert await store.get("p", "s") is None


async def test_table_with_a_foreign_key_schema_is_refused(moto_endpoint: str, boto: Callable[[str], Any]) -> None:
    table = unique("foreign")
    await asyncio.to_thread(
        boto("dynamodb").create_table,
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    async with await DynamoMetaStore.open(table, endpoint_url=moto_endpoint, region=REGION) as store:
        with pytest.raises(InvalidRequest, match="key schema"):
            await store.ensure(create=True)


# --- DynamoDB: condition translation ---------------------------------------------------------
STORED = {"s": "m", "n": 5, "b": True, "z": None, "l": [1, "x"], "d": {"k": 1}}
ATTRS = ["s", "n", "b", "z", "l", "missing"]
VALUES: list[Any] = ["m", "a", 5, 6, True, False, None, [1, "x"], {"k": 1}]


async def test_condition_translation_matches_evaluate(table_store: DynamoMetaStore) -> None:
    """Every operator against every stored type, a missing attribute and NULL, as DynamoDB sees it."""
    stored = Item("cond", "present", STORED)
    await table_store.write([Put(stored)])
    limit = asyncio.Semaphore(4)
    mismatches: list[str] = []

    async def check(attr: str, op: str, value: Any) -> None:
        condition = Condition(None, (Compare(attr, op, value),))
        ordering_on_containers = op not in ("=", "<>") and isinstance(value, (list, dict))
        async with limit:
            present = await outcome(table_store, Put(stored, condition))  # rewrites the same item on success
            # On an absent item every attribute is missing, so one attribute name covers the case.
            absent = await outcome(table_store, Delete("cond", "absent", condition)) if attr == "n" else None
        if ordering_on_containers:
            expected_present: Any = InvalidRequest
            expected_absent: Any = InvalidRequest
        else:
            expected_present = conditions.evaluate(condition, stored)
            expected_absent = conditions.evaluate(condition, None)
        if absent is None:
            expected_absent = None
        if (present, absent) != (expected_present, expected_absent):
            mismatches.append(f"{attr} {op} {value!r}: got {present}/{absent}, evaluate says {expected_present}/{expected_absent}")

    await asyncio.gather(*(check(a, op, v) for a in ATTRS for op in conditions.OPERATORS for v in VALUES))
    assert not mismatches, "\n".join(mismatches)
    assert await table_store.get("cond", "present") == stored
    assert await table_store.get("cond", "absent") is None


async def outcome(store: DynamoMetaStore, op: Any) -> Any:
    """True when the write applied, False on a Conflict carrying the right details, else the error type."""
    try:
        await store.write([op])
    except Conflict as conflict:
        expected_current = Item("cond", "present", STORED) if conditions.op_key(op)[1] == "present" else None
        assert (conflict.index, conflict.current) == (0, expected_current)
        return False
    except TidelogError as exc:
        return type(exc)
    return True


async def test_bool_and_int_never_compare_equal(table_store: DynamoMetaStore) -> None:
    """moto equates BOOL true with N 1 on its own; the type guards must keep them apart."""
    item = Item("kinds", "x", {"flag": True, "one": 1, "zero": 0, "off": False})
    await table_store.write([Put(item)])
    mismatches = []
    for op in conditions.OPERATORS:
        for attr, value in [("flag", 1), ("one", True), ("zero", False), ("off", 0)]:
            condition = Condition(True, (Compare(attr, op, value),))
            try:
                await table_store.write([Check("kinds", "x", condition), Put(Item("kinds", "y"))])  # transaction path
                applied = True
            except Conflict as conflict:
                assert conflict.index == 0 and conflict.current == item
                applied = False
            if applied != conditions.evaluate(condition, item):
                mismatches.append(f"{attr} {op} {value!r}")
    assert not mismatches


async def test_reserved_attribute_comparisons_never_hold(table_store: DynamoMetaStore) -> None:
    """`evaluate` never sees the key among the attributes, so a comparison on it is false."""
    item = Item("res", "x", {"v": 1})
    await table_store.write([Put(item)])
    for op in ("=", "<>"):
        with pytest.raises(Conflict):
            await table_store.write([Put(item, Condition(True, (Compare("pk", op, "res"),)))])


# --- DynamoDB: retries, transactions, batches ------------------------------------------------------
async def test_single_write_whose_first_attempt_landed_is_ambiguous(table_store: DynamoMetaStore) -> None:
    attempts = force_one_retry(table_store._client, "needs-retry.dynamodb.PutItem")
    with pytest.raises(Ambiguous):
        await table_store.write([Put(Item("amb", "x", {"v": 1}), ABSENT)])
    assert attempts[:2] == [1, 2]
    assert table_store.stats.requests["PutItem"] == 2
    assert await table_store.get("amb", "x") == Item("amb", "x", {"v": 1})


def cancelled(reasons: list[dict[str, Any]], *, retries: int = 0) -> ClientError:
    return client_error(
        "TransactionCanceledException", 400, retries=retries, op="TransactWriteItems", CancellationReasons=reasons
    )


@pytest.mark.parametrize(
    ("reasons", "retries", "expected"),
    [
        ([{"Code": "None"}, {"Code": "TransactionConflict"}], 0, Unavailable),
        ([{"Code": "ThrottlingError"}, {"Code": "None"}], 0, Unavailable),
        ([{"Code": "TransactionConflict"}, {"Code": "None"}], 1, Ambiguous),
        ([{"Code": "ValidationError"}, {"Code": "None"}], 0, InvalidRequest),
        ([{"Code": "SomethingNew"}, {"Code": "None"}], 0, Internal),
        # The ClientRequestToken makes retries idempotent: a condition failure after one is real.
        ([{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": {"pk": {"S": "t"}, "sk": {"S": "b"}}}], 1, Conflict),
    ],
    ids=["conflict", "throttled", "retried", "invalid", "unknown", "condition-after-retry"],
)
async def test_transaction_cancellation_reasons(
    table_store: DynamoMetaStore, monkeypatch: pytest.MonkeyPatch, reasons: list[dict[str, Any]], retries: int, expected: type
) -> None:
    sent: list[dict[str, Any]] = []

    async def cancelling(**params: Any) -> Any:
        sent.append(params)
        raise cancelled(reasons, retries=retries)

    monkeypatch.setattr(table_store._client, "transact_write_items", cancelling)
    with pytest.raises(TidelogError) as raised:
        await table_store.write([Put(Item("t", "a", {"v": 1})), Check("t", "b", ABSENT)])
    assert type(raised.value) is expected
    if expected is Conflict:
        assert raised.value.index == 1 and raised.value.current == Item("t", "b", {})
    assert sent[0]["ClientRequestToken"]


async def test_put_many_retries_unprocessed_items(table_store: DynamoMetaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB may write only part of a batch; the rest must be resent, and only written items billed."""
    real_batch = table_store._client.batch_write_item
    calls: list[int] = []

    async def partial_batch(**params: Any) -> Any:
        requests = params["RequestItems"][table_store.table]
        calls.append(len(requests))
        if len(calls) == 1:
            keep, left = requests[:10], requests[10:]
            response = await real_batch(RequestItems={table_store.table: keep})
            response["UnprocessedItems"] = {table_store.table: left}
            return response
        return await real_batch(**params)

    monkeypatch.setattr(table_store._client, "batch_write_item", partial_batch)
    items = [Item("pm", f"{i:02d}", {"i": i}) for i in range(25)]
    await table_store.put_many(items)
    assert calls == [25, 15]
    assert await table_store.query("pm") == items
    assert table_store.stats.requests["BatchWriteItem"] == 2
    assert table_store.stats.write_units == sum(write_units(item_size(i)) for i in items)


async def test_integers_outside_the_supported_range_are_rejected(table_store: DynamoMetaStore) -> None:
    for value in (2**63 + 1, -(2**63) - 1, [2**64]):
        with pytest.raises(InvalidRequest):
            await table_store.write([Put(Item("big", "x", {"v": value}))])
    await table_store.write([Put(Item("big", "x", {"hi": 2**63, "lo": -(2**63)}))])
    assert await table_store.get("big", "x") == Item("big", "x", {"hi": 2**63, "lo": -(2**63)})


# --- DynamoDB: query planning ---------------------------------------------------------------------
def test_prefix_end() -> None:
    assert prefix_end("a") == "b"
    assert prefix_end("a#") == "a$"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff\U0010ffff") is None
    assert prefix_end("\ud7ff") == "\ue000"  # skips the surrogates, which cannot be stored


def test_key_condition_plans() -> None:
    assert plan_key_condition("p", "", None, None).text == "pk = :pk"
    assert plan_key_condition("p", "a#", None, None).text == "pk = :pk AND begins_with(sk, :p)"
    plan = plan_key_condition("p", "a#", "a#5", None)
    assert plan.text.endswith("BETWEEN :lo AND :hi") and plan.values[":hi"] == {"S": "a$"}
    assert plan_key_condition("p", "", "", None).text == "pk = :pk"  # every sort key is after ""
    assert plan_key_condition("p", "", None, "b").text == "pk = :pk AND sk < :hi"
    assert plan_key_condition("p", "", "a", None).text == "pk = :pk AND sk > :lo"
    assert plan_key_condition("p", "", None, "") is None
    assert plan_key_condition("p", "b", None, "b") is None
    assert plan_key_condition("p", "", "c", "b") is None
    assert plan_key_condition("p", "a", "b", None) is None  # after the whole prefix range


EDGE_SKS = ["a", "a\U0010ffff", "a\U0010ffffz", "b", "\U0010ffff", "\U0010ffff\U0010ffff", "\ud7ff", "\ud7ffx", "\ue000"]


async def test_query_prefixes_at_the_edges_of_unicode(table_store: DynamoMetaStore) -> None:
    await table_store.put_many([Item("edge", sk) for sk in EDGE_SKS])
    ordered = sorted(EDGE_SKS, key=lambda s: s.encode())
    for prefix in ("a\U0010ffff", "\U0010ffff", "\U0010ffff\U0010ffff", "\ud7ff", "a", ""):
        for after, before in ((None, None), ("a", None), (None, "\ue000"), ("a\U0010ffff", "\U0010ffff")):
            for reverse in (False, True):
                expected = [
                    s
                    for s in ordered
                    if s.startswith(prefix) and (after is None or s > after) and (before is None or s < before)
                ]
                if reverse:
                    expected.reverse()
                got = await table_store.query("edge", prefix=prefix, after=after, before=before, reverse=reverse)
                assert [item.sk for item in got] == expected, (prefix, after, before, reverse)


# --- error translation ---------------------------------------------------------------------------
def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_unreachable_endpoint_raises_tidelog_errors(monkeypatch: pytest.MonkeyPatch, fake_aws_env: None) -> None:
    # One attempt each: botocore's backoff between connection retries would only slow the test.
    monkeypatch.setattr(s3, "MAX_ATTEMPTS", 1)
    monkeypatch.setattr(dynamodb, "MAX_ATTEMPTS", 1)
    endpoint = closed_port()
    reads: list[Callable[[], Any]] = []
    writes: list[Callable[[], Any]] = []
    objects = await S3ObjectStore.open("closed-bucket", endpoint_url=endpoint, region=REGION)
    meta = await DynamoMetaStore.open("closed-table", endpoint_url=endpoint, region=REGION)
    try:
        reads += [
            lambda: objects.get("k"),
            lambda: objects.head("k"),
            lambda: objects.ensure(create=False),
            lambda: anext(objects.list("")),
            lambda: meta.get("p", "s"),
            lambda: meta.query("p"),
            lambda: meta.ensure(create=False),
        ]
        writes += [
            lambda: objects.put_if_absent("k", b"v"),
            lambda: objects.delete("k"),
            lambda: meta.write([Put(Item("p", "s"), ABSENT)]),
            lambda: meta.write([Put(Item("p", "s")), Put(Item("p", "t"))]),
            lambda: meta.put_many([Item("p", "s")]),
        ]
        for call in reads:
            with pytest.raises(Unavailable) as raised:
                await call()
            assert not isinstance(raised.value, Ambiguous), raised.value
            assert isinstance(raised.value.__cause__, BotoCoreError)
        for call in writes:
            with pytest.raises(Unavailable) as raised:  # Ambiguous is a kind of Unavailable
                await call()
            assert isinstance(raised.value.__cause__, BotoCoreError)
    finally:
        await objects.close()
        await meta.close()


@pytest.mark.parametrize(
    ("error", "write", "expected"),
    [
        (client_error("SlowDown", 503), True, Unavailable),
        (client_error("ThrottlingException", 400, op="PutItem"), True, Unavailable),
        (client_error("ProvisionedThroughputExceededException", 400, op="Query"), False, Unavailable),
        (client_error("InternalError", 500), False, Unavailable),
        (client_error("InternalError", 500), True, Ambiguous),
        (client_error("ServiceUnavailable", 503), True, Unavailable),
        (client_error("RequestTimeout", 400), True, Unavailable),
        (client_error("ThrottlingException", 400, retries=2), True, Ambiguous),
        (client_error("ThrottlingException", 400, retries=2), False, Unavailable),
        (client_error("AccessDenied", 403), False, InvalidRequest),
        (client_error("ValidationException", 400, op="PutItem"), True, InvalidRequest),
        (client_error("NoSuchBucket", 404), False, NotFound),
        (client_error("ResourceNotFoundException", 400, op="GetItem"), False, NotFound),
        (client_error("Teapot", 418), False, Internal),
        (EndpointConnectionError(endpoint_url="http://x"), False, Unavailable),
        (EndpointConnectionError(endpoint_url="http://x"), True, Ambiguous),
        (ReadTimeoutError(endpoint_url="http://x"), False, Unavailable),
        (ReadTimeoutError(endpoint_url="http://x"), True, Ambiguous),
        (NoCredentialsError(), False, InvalidRequest),
        (ValueError("bug"), False, Internal),
    ],
)
def test_translate(error: BaseException, write: bool, expected: type) -> None:
    translated = aws_errors.translate(error, action="Op", write=write, key="k")
    assert type(translated) is expected
    message = str(translated)
    prose = message.split("=", 1)[0].rsplit(" ", 1)[0]  # the text before the first key=value
    assert prose and prose == prose.lower(), message
    assert "action=Op" in message and "key=k" in message
