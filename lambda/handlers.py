"""AWS Lambda entry points for tidelog's background work.

Each handler parses its event, reuses the storage adapters built on the
container's first invocation, runs one `storage.maintenance` job and
returns a JSON-able summary.  All decisions live in the storage services;
nothing here but wiring.

Configuration: ``TIDELOG_S3_BUCKET``, ``TIDELOG_DYNAMODB_TABLE``,
``TIDELOG_ENDPOINT_URL`` (optional, for LocalStack/moto) and ``AWS_REGION``,
each overridable by the event (``bucket``, ``table``, ``endpoint_url``,
``region``).  The event may also name ``topics`` (default: all) and
``options``, flat overrides of the maintenance policy such as
``{"target_bytes": 67108864, "codec": "zstandard", "max_wait_ms": 600000,
"grace_ms": 3600000, "min_age_ms": 3600000}`` (see
`storage.maintenance.MaintenanceConfig.from_options`).

Why a long-lived event loop instead of ``asyncio.run`` per invocation:
aioboto3 clients are bound to the loop that created them, and building them
(loading botocore's service models) is the expensive part of a cold start.
So each warm container keeps one loop and the adapters opened on it, and
every invocation runs its job to completion on that loop.

A job stops starting new partitions ``DEADLINE_MARGIN_MS`` before the
invocation's time runs out and reports how many it skipped; the next
scheduled run continues (every service is idempotent and safe to overlap).

Memory: tiering and compaction hold about three target-sized segments per
partition in flight (``concurrency``, default 4), so the default 64 MiB
target wants a function of ~1.5 GB, or a smaller ``concurrency`` option.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

from tidelog.storage.clock import SYSTEM_CLOCK
from tidelog.storage.errors import InvalidRequest
from tidelog.storage.factory import Storage, StorageConfig, open_storage
from tidelog.storage.maintenance import Maintenance, MaintenanceConfig

log = logging.getLogger("tidelog.lambdas")

DEADLINE_MARGIN_MS = 20_000


@dataclass
class _Runtime:
    loop: asyncio.AbstractEventLoop
    storage: Storage


_RUNTIMES: dict[StorageConfig, _Runtime] = {}


def tier_handler(event: Mapping[str, Any] | None, context: Any) -> dict:
    """Merge checkpointed ingest data into tier segments."""
    return _handle("tier", event, context)


def retention_handler(event: Mapping[str, Any] | None, context: Any) -> dict:
    """Delete whole segments beyond ``retention.ms`` / ``retention.bytes``."""
    return _handle("retention", event, context)


def compaction_handler(event: Mapping[str, Any] | None, context: Any) -> dict:
    """Compact tiered data of ``cleanup.policy=compact`` topics."""
    return _handle("compaction", event, context)


def gc_handler(event: Mapping[str, Any] | None, context: Any) -> dict:
    """Delete unreferenced objects and covered metadata after the grace period."""
    return _handle("gc", event, context)


def storage_config(event: Mapping[str, Any], env: Mapping[str, str] | None = None) -> StorageConfig:
    env = os.environ if env is None else env
    bucket = event.get("bucket") or env.get("TIDELOG_S3_BUCKET")
    table = event.get("table") or env.get("TIDELOG_DYNAMODB_TABLE")
    if not bucket or not table:
        raise InvalidRequest("set TIDELOG_S3_BUCKET and TIDELOG_DYNAMODB_TABLE (or bucket and table in the event)")
    return StorageConfig(data_dir=None, s3_bucket=str(bucket), dynamodb_table=str(table),
                         endpoint_url=event.get("endpoint_url") or env.get("TIDELOG_ENDPOINT_URL") or None,
                         region=str(event.get("region") or env.get("AWS_REGION") or "us-east-1"))


def _handle(job: str, event: Mapping[str, Any] | None, context: Any) -> dict:
    event = dict(event or {})
    config = storage_config(event)
    options = MaintenanceConfig.from_options(event.get("options"))
    topics = event.get("topics")
    if topics is not None and (not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)):
        raise InvalidRequest("topics must be a list of topic names")
    runtime = _runtime(config)
    maintenance = Maintenance(runtime.storage.objects, runtime.storage.meta, SYSTEM_CLOCK, options)
    deadline = _deadline(context)
    summary = runtime.loop.run_until_complete(maintenance.run(job, topics=topics, deadline_ms=deadline))
    log.info("tidelog maintenance finished", extra={"job": job, "summary": summary.get("totals", summary)})
    return summary


def _runtime(config: StorageConfig) -> _Runtime:
    runtime = _RUNTIMES.get(config)
    if runtime is None:
        loop = asyncio.new_event_loop()
        try:
            storage = loop.run_until_complete(open_storage(config))
        except BaseException:
            loop.close()
            raise
        runtime = _RUNTIMES[config] = _Runtime(loop, storage)
    return runtime


def _deadline(context: Any) -> int | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return SYSTEM_CLOCK.monotonic_ms() + max(0, int(remaining()) - DEADLINE_MARGIN_MS)


def close_all() -> None:
    """Close every cached adapter and loop (tests, or a runtime's shutdown hook)."""
    while _RUNTIMES:
        _, runtime = _RUNTIMES.popitem()
        try:
            runtime.loop.run_until_complete(runtime.storage.close())
        finally:
            runtime.loop.close()
