"""Replication lag between the primary bucket and its cross-region replica: the live RPO.

Every committed record lives in an ingest object before anything else
refers to it, so the replica can serve (after `recovery`) exactly the
ingest objects it has.  The replica is *complete through* time T when it
holds every primary ingest object written up to T; the lag is

    newest primary ingest write - T        (0 when nothing is missing)

Both times are the primary's own ``LastModified`` stamps, so no two clocks
are compared, and S3 replication's lack of ordering is accounted for: one
old object still missing holds T back however many newer ones arrived.
When the oldest missing object has nothing complete before it, T is taken
as just before it, so the lag is positive whenever anything is missing.

Cost of one measurement: a LIST of ``ingest/`` on each bucket (one request
per 1000 objects each).  Ingest objects are deleted once tiered, so the
prefix stays small.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from . import keys
from .errors import TidelogError
from .model import ObjectInfo
from .ports import ObjectStore

log = logging.getLogger("tidelog.replication")


@dataclass(frozen=True, slots=True)
class ReplicationLag:
    lag_ms: int
    missing: int  # primary ingest objects not in the replica yet
    primary_objects: int
    newest_primary_ms: int | None
    complete_through_ms: int | None

    @property
    def in_sync(self) -> bool:
        return self.missing == 0

    def to_json(self) -> dict:
        return {"lag_ms": self.lag_ms, "missing_objects": self.missing, "primary_objects": self.primary_objects,
                "newest_primary_ms": self.newest_primary_ms, "complete_through_ms": self.complete_through_ms}


def replication_lag(primary: Iterable[ObjectInfo], replica_keys: Iterable[str]) -> ReplicationLag:
    objs = sorted(primary, key=lambda o: (o.last_modified_ms, o.key))
    if not objs:
        return ReplicationLag(0, 0, 0, None, None)
    present = set(replica_keys)
    newest = objs[-1].last_modified_ms
    missing = [o for o in objs if o.key not in present]
    if not missing:
        return ReplicationLag(0, 0, len(objs), newest, newest)
    oldest_missing = missing[0].last_modified_ms
    before = [o.last_modified_ms for o in objs if o.key in present and o.last_modified_ms < oldest_missing]
    complete_through = before[-1] if before else oldest_missing - 1
    return ReplicationLag(newest - complete_through, len(missing), len(objs), newest, complete_through)


async def measure_replication_lag(primary: ObjectStore, replica: ObjectStore,
                                  prefix: str = keys.INGEST_ROOT) -> ReplicationLag:
    primary_objects = [info async for info in primary.list(prefix)]
    replica_keys = [info.key async for info in replica.list(prefix)]
    return replication_lag(primary_objects, replica_keys)


async def open_bucket(bucket: str, *, region: str, endpoint_url: str | None = None) -> ObjectStore:
    """An S3 bucket's object store, for a bucket outside the broker's own storage config
    (the replica lives in another region; replication is an S3 feature)."""
    from .adapters.s3 import S3ObjectStore

    return await S3ObjectStore.open(bucket, endpoint_url=endpoint_url, region=region)


class ReplicationMonitor:
    """Measures the lag every ``interval_s`` for as long as it runs (a broker's gauge).

    The replica store is opened on first use and closed when the task ends; a
    failed measurement is logged and retried at the next interval, because a
    replica region being unreachable is exactly what the gauge must survive.
    """

    def __init__(self, primary: ObjectStore, replica_bucket: str, *, region: str, endpoint_url: str | None = None,
                 interval_s: float = 60.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.primary = primary
        self.replica_bucket = replica_bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.interval_s = interval_s
        self._sleep = sleep

    async def run_forever(self, report: Callable[[ReplicationLag], None]) -> None:
        replica: ObjectStore | None = None
        try:
            while True:
                try:
                    if replica is None:
                        replica = await open_bucket(self.replica_bucket, region=self.region,
                                                    endpoint_url=self.endpoint_url)
                    report(await measure_replication_lag(self.primary, replica))
                except TidelogError as exc:
                    log.warning("replication lag not measured", extra={"replica": self.replica_bucket,
                                                                      "error": str(exc)})
                await self._sleep(self.interval_s)
        finally:
            if replica is not None:
                await replica.close()
