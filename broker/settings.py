"""One typed settings object for the broker.

Sources, highest precedence first: CLI flags, ``TIDELOG_<NAME>`` environment
variables, an optional TOML file (``--config`` / ``TIDELOG_CONFIG``; keys
are the field names, with ``-`` or ``_``), then the defaults below.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    advertised_port: int | None = None
    node_id: int = 0
    rack: str | None = None
    data_dir: str = "./tidelog-data"
    s3_bucket: str | None = None
    dynamodb_table: str | None = None
    endpoint_url: str | None = None
    region: str = "us-east-1"
    flush_interval_ms: int = 20
    flush_bytes: int = 4 * 1024 * 1024
    checkpoint_interval_ms: int = 10_000
    lease_ttl_ms: int = 7_000
    tail_cache_bytes: int = 1024 * 1024  # per partition; tailing consumers need only the recent batches
    read_cache_bytes: int = 128 * 1024 * 1024
    max_request_bytes: int = 100 * 1024 * 1024
    auto_create_topics: bool = False
    default_partitions: int = 1
    metrics_port: int | None = None
    log_level: str = "info"
    log_format: str = "json"
    cluster_id: str = "tidelog"
    offsets_retention_minutes: int = 7 * 24 * 60
    # Tiering, retention, compaction and GC in the broker (`storage.maintenance`).
    # None: every 5 minutes on the embedded store, off with S3/DynamoDB (the Lambdas do it).
    tier_interval_ms: int | None = None
    tier_max_wait_ms: int = 10 * 60_000  # tier a partial segment once data has waited this long
    # Cross-region replica of the S3 bucket: exported as the replication-lag gauge (`storage.replication`).
    replica_bucket: str | None = None
    replica_region: str | None = None

    @property
    def uses_aws(self) -> bool:
        return bool(self.s3_bucket or self.dynamodb_table)

    @property
    def maintenance_interval_ms(self) -> int:
        if self.tier_interval_ms is not None:
            return self.tier_interval_ms
        return 0 if self.uses_aws else 300_000

    @property
    def public_host(self) -> str:
        return self.advertised_host or self.host

    @property
    def public_port(self) -> int:
        return self.advertised_port or self.port

    def validate(self) -> "Settings":
        if bool(self.s3_bucket) != bool(self.dynamodb_table):
            raise SettingsError("--s3-bucket and --dynamodb-table go together")
        for name in ("port", "flush_interval_ms", "flush_bytes", "lease_ttl_ms", "max_request_bytes", "default_partitions"):
            if getattr(self, name) <= 0 and not (name == "port" and getattr(self, name) == 0):
                raise SettingsError(f"{name.replace('_', '-')} must be positive")
        if (self.tier_interval_ms or 0) < 0 or self.tier_max_wait_ms < 0:
            raise SettingsError("tier-interval-ms and tier-max-wait-ms must not be negative")
        if self.replica_bucket and not self.s3_bucket:
            raise SettingsError("--replica-bucket needs --s3-bucket: replication is between S3 buckets")
        if self.log_format not in ("json", "text"):
            raise SettingsError("log-format must be json or text")
        return self


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, raw: Any) -> Any:
    kind = _FIELDS[name].type
    if raw is None:
        return None
    try:
        if "bool" in kind:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "int" in kind:
            return int(raw)
        return str(raw)
    except ValueError:
        raise SettingsError(f"invalid value for {name.replace('_', '-')}: {raw!r}") from None


def load_settings(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                  config_file: str | None = None) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("TIDELOG_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {path}: {exc}") from None
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise SettingsError(f"unknown setting {key!r} in {path}")
            values[name] = _coerce(name, raw)
    for name in _FIELDS:
        raw = env.get("TIDELOG_" + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw)
    for name, raw in (cli or {}).items():
        if raw is not None and name in _FIELDS:
            values[name] = _coerce(name, raw)
    return dataclasses.replace(Settings(), **values).validate()
