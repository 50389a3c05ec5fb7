"""`tidelog tier run`: one round of tiering, retention, compaction and GC.

The same jobs the Lambdas run on a schedule (and an embedded broker runs
every ``--tier-interval-ms``), run once against the storage the flags name.
Safe while brokers are running: every job only makes conditional writes and
never deletes an object something still refers to.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from tidelog.broker.settings import SettingsError, load_settings
from tidelog.storage.clock import SYSTEM_CLOCK
from tidelog.storage.errors import TidelogError
from tidelog.storage.factory import StorageConfig, open_storage
from tidelog.storage.maintenance import JOBS, Maintenance, MaintenanceConfig

from .serve_cmds import storage_options
from .common import emit_json, emit_table, output_option

_STORAGE_FLAGS = ("data_dir", "s3_bucket", "dynamodb_table", "endpoint_url", "region")


_storage_options = storage_options  # the same flags (and TIDELOG_* variables / --config) as `tidelog serve`


@click.group("tier")
def tier_group() -> None:
    """Tiering, retention, compaction and garbage collection of stored data."""


@tier_group.command("run")
@_storage_options
@click.option("--only", type=click.Choice(JOBS), help="Run one job instead of all four. Example: --only tier")
@click.option("--topic", "topics", multiple=True, help="Limit to a topic, repeatable (gc is always global). Example: --topic orders")
@click.option("--target-bytes", type=int, help="Tier segment size target (default 64 MiB; a topic's segment.bytes may lower it). Example: --target-bytes 16777216")
@click.option("--codec", type=click.Choice(["zstandard", "snappy"]), help="Tier segment codec (default zstandard).")
@click.option("--max-wait-ms", type=int, help="Tier a partial segment once data has waited this long (default 600000; 0 = at once). Example: --max-wait-ms 0")
@click.option("--grace-ms", type=int, help="GC keeps an unreferenced object this long after it was first seen so (default 3600000). Example: --grace-ms 600000")
@click.option("--min-age-ms", type=int, help="GC never considers objects younger than this (default 3600000). Example: --min-age-ms 900000")
@output_option()
def run_command(only: str | None, topics: tuple[str, ...], output: str, **kwargs: Any) -> None:
    """Run maintenance once and print what it did.

    \b
    Examples:
      tidelog tier run --data-dir ./tidelog-data
      tidelog tier run --only tier --max-wait-ms 0 --s3-bucket B --dynamodb-table T
    """
    options = {name: kwargs.pop(name) for name in ("target_bytes", "codec", "max_wait_ms", "grace_ms", "min_age_ms")}
    config_file = kwargs.pop("config_file", None)
    try:
        settings = load_settings({k: kwargs.get(k) for k in _STORAGE_FLAGS}, config_file=config_file)
        config = MaintenanceConfig.from_options({k: v for k, v in options.items() if v is not None})
    except (SettingsError, TidelogError) as exc:
        raise click.ClickException(str(exc)) from None
    storage = StorageConfig(data_dir=settings.data_dir, s3_bucket=settings.s3_bucket,
                            dynamodb_table=settings.dynamodb_table, endpoint_url=settings.endpoint_url,
                            region=settings.region)
    jobs = (only,) if only else JOBS
    try:
        summary = asyncio.run(_run(storage, config, jobs, list(topics) or None))
    except TidelogError as exc:
        raise click.ClickException(f"maintenance failed for {storage.describe()}: {exc}") from None
    if output == "json":
        emit_json(summary)
        return
    rows = []
    for job, result in summary.items():
        totals = result.get("totals") or {k: v for k, v in result.items() if isinstance(v, (int, dict)) and k != "job"}
        done = ", ".join(f"{k}={v}" for k, v in totals.items() if v) or "nothing to do"
        errors = len(result.get("errors", []))
        rows.append([job, result.get("partitions", "-"), done, errors])
    emit_table(["JOB", "PARTITIONS", "DONE", "ERRORS"], rows)
    if any(r[3] for r in rows):
        raise click.ClickException("some partitions failed; rerun with --output json for details")


async def _run(config: StorageConfig, maintenance: MaintenanceConfig, jobs: tuple[str, ...],
               topics: list[str] | None) -> dict[str, dict]:
    storage = await open_storage(config)
    try:
        await storage.ensure(create=False)
        return await Maintenance(storage.objects, storage.meta, SYSTEM_CLOCK, maintenance).run_all(jobs, topics=topics)
    finally:
        await storage.close()
