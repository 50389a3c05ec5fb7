"""The two storage ports.  Every backend implements one of them and passes
the shared contract suite in ``tests/integration/test_contract_*.py``.

Object store contract
---------------------
* ``put_if_absent`` creates an object atomically or not at all; if the key
  exists it raises `AlreadyExists` and leaves the existing object untouched.
  A reader never observes a partially written object.
* ``get`` returns bytes ``[start, end)`` (``end=None``: to the end); a range
  past the end is clipped; a missing key raises `NotFound`.
* ``delete`` is idempotent.  ``list`` yields every key under a prefix in
  lexical order.
* Transient backend failures raise `Unavailable`; a write whose outcome is
  unknown raises `Ambiguous`.

Metadata store contract
-----------------------
* Items are addressed by ``(pk, sk)``; ``query`` returns one partition key's
  items in sort-key order (``reverse`` for descending), filtered by
  ``prefix`` and the exclusive bounds ``after``/``before``.
* ``get`` and ``query`` are strongly consistent: they see every write that
  completed before they were issued.
* ``write`` applies up to 100 `Put`/`Delete`/`Check` operations atomically:
  either every condition holds and every operation is applied, or nothing is
  and `Conflict` is raised with ``index`` (the failing operation) and
  ``current`` (that item as stored, or None).  Concurrent writers are
  linearizable: of N racing writes conditioned on the same state, exactly one
  succeeds.
* ``put_many`` writes items unconditionally in as few requests as the
  backend allows; it is for idempotent data only (checkpoints never fence).
* ``stats`` counts requests and DynamoDB-equivalent capacity units.
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol, Sequence, runtime_checkable

from .conditions import WriteOp
from .cost import StoreStats
from .model import Item, ObjectInfo


@runtime_checkable
class ObjectStore(Protocol):
    stats: StoreStats

    async def ensure(self, create: bool) -> None:
        """Create the bucket/directory when ``create``; otherwise raise `NotFound` if it is missing."""

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` unless it exists; returns the ETag."""

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        ...

    async def head(self, key: str) -> ObjectInfo:
        ...

    async def delete(self, key: str) -> None:
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        ...

    async def close(self) -> None:
        ...


@runtime_checkable
class MetaStore(Protocol):
    stats: StoreStats

    async def ensure(self, create: bool) -> None:
        """Create the table when ``create``; otherwise raise `NotFound` if it is missing."""

    async def get(self, pk: str, sk: str) -> Item | None:
        ...

    async def query(
        self,
        pk: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[Item]:
        ...

    async def write(self, ops: Sequence[WriteOp]) -> None:
        ...

    async def put_many(self, items: Sequence[Item]) -> None:
        ...

    async def close(self) -> None:
        ...
