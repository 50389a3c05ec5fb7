"""Replication lag measured over two object stores (the primary and its replica)."""

from __future__ import annotations

from pathlib import Path

from tidelog.storage.adapters.localdir import LocalObjectStore
from tidelog.storage.replication import measure_replication_lag


async def test_measured_over_two_object_stores(tmp_path: Path) -> None:
    primary = await LocalObjectStore.open(tmp_path / "p")
    replica = await LocalObjectStore.open(tmp_path / "r")
    for store in (primary, replica):
        await store.ensure(create=True)
    try:
        for seq in range(3):
            await primary.put_if_absent(f"ingest/0-1/{seq:012d}.avro", b"x")
        await primary.put_if_absent("tier/topic=t/partition=0/x.avro", b"not counted")
        await replica.put_if_absent("ingest/0-1/000000000000.avro", b"x")
        lag = await measure_replication_lag(primary, replica)
        assert (lag.missing, lag.primary_objects) == (2, 3)
        for seq in (1, 2):
            await replica.put_if_absent(f"ingest/0-1/{seq:012d}.avro", b"x")
        assert (await measure_replication_lag(primary, replica)).in_sync
    finally:
        await primary.close()
        await replica.close()
