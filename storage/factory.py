"""The only place that chooses storage backends.

``open_storage`` returns both ports for either the embedded store (a data
directory with ``objects/`` and ``metadata.sqlite3``) or S3 + DynamoDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .ports import MetaStore, ObjectStore


@dataclass(frozen=True, slots=True)
class StorageConfig:
    data_dir: str | None = "./tidelog-data"
    s3_bucket: str | None = None
    dynamodb_table: str | None = None
    endpoint_url: str | None = None
    region: str = "us-east-1"

    @property
    def uses_aws(self) -> bool:
        return bool(self.s3_bucket)

    def describe(self) -> str:
        if self.uses_aws:
            where = f" via {self.endpoint_url}" if self.endpoint_url else ""
            return f"s3://{self.s3_bucket} + dynamodb:{self.dynamodb_table} ({self.region}){where}"
        return f"embedded store at {Path(self.data_dir or '.').resolve()}"


@dataclass
class Storage:
    objects: ObjectStore
    meta: MetaStore

    async def ensure(self, create: bool) -> None:
        await self.objects.ensure(create)
        await self.meta.ensure(create)

    async def close(self) -> None:
        await self.objects.close()
        await self.meta.close()

    async def __aenter__(self) -> "Storage":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def open_storage(config: StorageConfig) -> Storage:
    if config.uses_aws:
        from .adapters.dynamodb import DynamoMetaStore
        from .adapters.s3 import S3ObjectStore

        objects = await S3ObjectStore.open(config.s3_bucket, endpoint_url=config.endpoint_url, region=config.region)
        meta = await DynamoMetaStore.open(config.dynamodb_table, endpoint_url=config.endpoint_url, region=config.region)
        return Storage(objects, meta)
    from .adapters.localdir import LocalObjectStore
    from .adapters.sqlite import SqliteMetaStore

    root = Path(config.data_dir or "./tidelog-data")
    objects = await LocalObjectStore.open(root / "objects")
    meta = await SqliteMetaStore.open(root / "metadata.sqlite3")
    return Storage(objects, meta)
