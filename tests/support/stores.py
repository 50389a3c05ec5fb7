"""Both storage ports of one backend as a pair, and a MetaStore that loses replies on purpose.

``storage`` is a fixture parametrised over the embedded pair (a directory and
SQLite) and the AWS pair (S3 and DynamoDB on the session's moto server, a
fresh bucket and table per test).  Import it into a test module to use it.

``LostReplies`` wraps a real MetaStore: chosen writes are applied and then
answered with `Ambiguous`, the outcome real stores produce when a reply is
lost after the write landed, so protocol code can be shown to settle it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

import pytest

from tidelog.storage.conditions import Put, WriteOp
from tidelog.storage.errors import Ambiguous
from tidelog.storage.factory import Storage

REGION = "us-east-1"
BACKENDS = [pytest.param("local", id="local"), pytest.param("aws", id="aws", marks=pytest.mark.aws)]


def unique_name(kind: str) -> str:
    return f"tidelog-test-{kind}-{uuid.uuid4().hex}"[:63]


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        from tidelog.storage.adapters.localdir import LocalObjectStore
        from tidelog.storage.adapters.sqlite import SqliteMetaStore

        store = Storage(await LocalObjectStore.open(tmp_path / "objects"), await SqliteMetaStore.open(tmp_path / "m.db"))
    else:
        from tidelog.storage.adapters.dynamodb import DynamoMetaStore
        from tidelog.storage.adapters.s3 import S3ObjectStore

        endpoint = request.getfixturevalue("moto_endpoint")
        store = Storage(await S3ObjectStore.open(unique_name("b"), endpoint_url=endpoint, region=REGION),
                        await DynamoMetaStore.open(unique_name("t"), endpoint_url=endpoint, region=REGION))
    try:
        await store.ensure(create=True)
        yield store
    finally:
        await store.close()


class LostReplies:
    """A MetaStore whose next writes matching a rule are applied but answered with `Ambiguous`."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.stats = inner.stats
        self._rules: list[list] = []  # [predicate, times left]
        self.lost = 0

    def lose(self, when: Callable[[Sequence[WriteOp]], bool], times: int = 1) -> None:
        self._rules.append([when, times])

    async def write(self, ops: Sequence[WriteOp]) -> None:
        await self.inner.write(ops)
        for rule in self._rules:
            if rule[1] > 0 and rule[0](ops):
                rule[1] -= 1
                self.lost += 1
                raise Ambiguous("reply lost after the write was applied (test)")

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def puts_to(pk: str) -> Callable[[Sequence[WriteOp]], bool]:
    """A `LostReplies` rule: writes that put an item under partition key ``pk``."""
    return lambda ops: any(isinstance(op, Put) and op.item.pk == pk for op in ops)
