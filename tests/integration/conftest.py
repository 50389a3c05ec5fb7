"""Backends for the storage contract suite.

``object_store`` and ``meta_store`` are parametrised over every adapter:
``local`` (a directory and a SQLite file under ``tmp_path``) and ``aws``
(S3/DynamoDB adapters against one moto server per session, behind a global
request lock so conditional writes are linearizable, with a fresh bucket or
table per test).  Every store handed to a test has had ``ensure(create=True)``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

REGION = "us-east-1"

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("aws", id="aws", marks=pytest.mark.aws),
]

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
# A developer's real session token or profile must not leak into requests to moto.
_CLEARED_AWS_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")


@pytest.fixture(scope="session")
def fake_aws_env() -> Iterator[None]:
    """Fake credentials for the session only; the developer's environment is restored after."""
    patch = pytest.MonkeyPatch()
    for name, value in _FAKE_AWS_ENV.items():
        patch.setenv(name, value)
    for name in _CLEARED_AWS_ENV:
        patch.delenv(name, raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def moto_endpoint(fake_aws_env: None) -> Iterator[str]:
    from tests.support.moto_server import MotoServer

    server = MotoServer()
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


def unique_name(kind: str) -> str:
    """A bucket/table name unique per test (S3 allows lowercase, digits and '-')."""
    return f"tidelog-test-{kind}-{uuid.uuid4().hex}"


@pytest.fixture(params=BACKENDS)
async def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "local":
        from tidelog.storage.adapters.localdir import LocalObjectStore

        store = await LocalObjectStore.open(tmp_path / "objects")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        from tidelog.storage.adapters.s3 import S3ObjectStore

        store = await S3ObjectStore.open(bucket=unique_name("b")[:63], endpoint_url=endpoint, region=REGION)
    try:
        await store.ensure(create=True)
        yield store
    finally:
        await store.close()


@pytest.fixture(params=BACKENDS)
async def meta_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "local":
        from tidelog.storage.adapters.sqlite import SqliteMetaStore

        store = await SqliteMetaStore.open(tmp_path / "meta.db")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        from tidelog.storage.adapters.dynamodb import DynamoMetaStore

        store = await DynamoMetaStore.open(table=unique_name("t"), endpoint_url=endpoint, region=REGION)
    try:
        await store.ensure(create=True)
        yield store
    finally:
        await store.close()
