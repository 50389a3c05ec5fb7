"""`tidelog serve` and `tidelog init`."""

from __future__ import annotations

import asyncio
import functools
import sys

import click

from tidelog.broker.app import StartupError, serve, storage_config
from tidelog.broker.logging_setup import setup_logging
from tidelog.broker.settings import SettingsError, load_settings
from tidelog.storage.errors import TidelogError
from tidelog.storage.factory import open_storage


def storage_options(fn):
    @click.option("--data-dir", help="Embedded store directory (default ./tidelog-data). Example: --data-dir /var/lib/tidelog")
    @click.option("--s3-bucket", help="S3 bucket for segment objects (with --dynamodb-table). Example: --s3-bucket my-log")
    @click.option("--dynamodb-table", help="DynamoDB table for metadata. Example: --dynamodb-table tidelog-meta")
    @click.option("--endpoint-url", help="AWS endpoint override for LocalStack or moto. Example: --endpoint-url http://localhost:4566")
    @click.option("--region", help="AWS region (default us-east-1). Example: --region eu-west-1")
    @click.option("--config", "config_file", type=click.Path(), help="Optional TOML settings file. Example: --config tidelog.toml")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def _settings(kwargs: dict):
    config_file = kwargs.pop("config_file", None)
    try:
        return load_settings(kwargs, config_file=config_file)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("serve")
@storage_options
@click.option("--host", help="Interface to listen on (default 127.0.0.1). Example: --host 0.0.0.0")
@click.option("--port", type=int, help="Kafka port (default 9092). Example: --port 19092")
@click.option("--advertised-host", help="Host clients should connect to. Example: --advertised-host broker1.internal")
@click.option("--advertised-port", type=int, help="Port clients should connect to. Example: --advertised-port 9092")
@click.option("--node-id", type=int, help="Broker node id, unique in a cluster (default 0). Example: --node-id 2")
@click.option("--flush-interval-ms", type=int, help="Longest a produced batch waits before its flush (default 20). Example: --flush-interval-ms 50")
@click.option("--flush-bytes", type=int, help="Flush early once this many bytes are buffered (default 4 MiB). Example: --flush-bytes 8388608")
@click.option("--lease-ttl-ms", type=int, help="Session lease; a dead broker's partitions move after about this plus 1 s (default 7000). Example: --lease-ttl-ms 3000")
@click.option("--checkpoint-interval-ms", type=int, help="How often partition state is checkpointed (default 10000). Example: --checkpoint-interval-ms 30000")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port. Example: --metrics-port 9308")
@click.option("--tier-interval-ms", type=int, help="Run tiering, retention, compaction and GC this often; 0 = off (default 300000 on the embedded store, off on S3/DynamoDB). Example: --tier-interval-ms 60000")
@click.option("--replica-bucket", help="Cross-region replica of --s3-bucket: export its lag as the tidelog_replication_lag_seconds gauge. Example: --replica-bucket my-log-replica")
@click.option("--replica-region", help="Region of --replica-bucket (default: --region). Example: --replica-region us-west-2")
@click.option("--auto-create-topics/--no-auto-create-topics", default=None, help="Create unknown topics on first use (default off).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity (default info).")
@click.option("--log-format", type=click.Choice(["json", "text"]), help="Log line format (default json).")
def serve_command(**kwargs) -> None:
    """Run a broker.

    \b
    Embedded store (a directory plus SQLite):  tidelog serve
    S3 + DynamoDB:  tidelog serve --s3-bucket B --dynamodb-table T [--endpoint-url URL]
    """
    settings = _settings(kwargs)
    setup_logging(settings.log_level, settings.log_format)
    try:
        code = asyncio.run(serve(settings))
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    except TidelogError as exc:
        raise click.ClickException(f"storage error: {exc}") from None
    sys.exit(code)


@click.command("init")
@storage_options
def init_command(**kwargs) -> None:
    """Create the bucket and table (or the data directory) if missing. Safe to re-run.

    \b
    Example:  tidelog init --s3-bucket my-log --dynamodb-table tidelog-meta --endpoint-url http://localhost:4566
    """
    settings = _settings(kwargs)
    config = storage_config(settings)

    async def run() -> None:
        storage = await open_storage(config)
        try:
            await storage.ensure(create=True)
        finally:
            await storage.close()
    try:
        asyncio.run(run())
    except TidelogError as exc:
        raise click.ClickException(f"init failed for {config.describe()}: {exc}") from None
    click.echo(f"ready: {config.describe()}")
