"""The object-store contract (see `tidelog.storage.ports`), run against every backend."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tidelog.storage.errors import AlreadyExists, InvalidRequest, NotFound
from tidelog.storage.ports import ObjectStore

MiB = 1024 * 1024


async def keys_under(store: ObjectStore, prefix: str) -> list[str]:
    return [info.key async for info in store.list(prefix)]


def test_adapter_implements_the_port(object_store: ObjectStore) -> None:
    assert isinstance(object_store, ObjectStore)


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 3, os.urandom(5 * MiB)],
    ids=["empty", "binary", "5MiB"],
)
async def test_put_get_round_trip(object_store: ObjectStore, data: bytes) -> None:
    etag = await object_store.put_if_absent("round/trip.bin", data)
    assert isinstance(etag, str) and etag
    assert await object_store.get("round/trip.bin") == data
    info = await object_store.head("round/trip.bin")
    assert (info.key, info.size) == ("round/trip.bin", len(data))
    assert abs(info.last_modified_ms - time.time() * 1000) < 24 * 3600 * 1000


RANGES: list[tuple[int, int | None, slice]] = [
    (0, None, slice(0, 100)),
    (10, 20, slice(10, 20)),
    (0, 1, slice(0, 1)),
    (99, None, slice(99, 100)),
    (90, 200, slice(90, 100)),  # end clipped
    (5, 5, slice(5, 5)),  # empty range
    (100, None, slice(100, 100)),  # start at end
    (150, 160, slice(100, 100)),  # start past end
    (150, None, slice(100, 100)),
]


async def test_get_byte_ranges(object_store: ObjectStore) -> None:
    data = bytes(range(100))
    await object_store.put_if_absent("ranges", data)
    for start, end, expected in RANGES:
        assert await object_store.get("ranges", start, end) == data[expected], f"start={start} end={end}"


async def test_range_of_empty_object_is_empty(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("empty", b"")
    assert await object_store.get("empty", 0, 10) == b""
    assert await object_store.get("empty", 3) == b""


async def test_malformed_range_is_invalid(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("bad-range", b"0123456789abcdef")
    for start, end in ((-1, None), (10, 5)):
        with pytest.raises(InvalidRequest):
            await object_store.get("bad-range", start, end)


async def test_missing_object_is_not_found(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("present/x", b"x")
    for key in ("absent", "present", "present/y", "present/x/deeper"):
        with pytest.raises(NotFound):
            await object_store.get(key)
        with pytest.raises(NotFound):
            await object_store.head(key)


async def test_already_exists_leaves_original_untouched(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("once", b"original")
    with pytest.raises(AlreadyExists):
        await object_store.put_if_absent("once", b"replacement, and longer")
    with pytest.raises(AlreadyExists):
        await object_store.put_if_absent("once", b"")
    assert await object_store.get("once") == b"original"
    assert (await object_store.head("once")).size == len(b"original")


async def test_delete_is_idempotent_and_frees_the_key(object_store: ObjectStore) -> None:
    await object_store.delete("never/existed")
    await object_store.put_if_absent("dir/victim", b"v1")
    await object_store.put_if_absent("dir/survivor", b"s")
    await object_store.delete("dir/victim")
    await object_store.delete("dir/victim")
    with pytest.raises(NotFound):
        await object_store.get("dir/victim")
    assert await keys_under(object_store, "dir/") == ["dir/survivor"]
    await object_store.put_if_absent("dir/victim", b"v2")
    assert await object_store.get("dir/victim") == b"v2"


async def test_deleting_the_last_object_under_a_prefix(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("deep/er/est/only", b"1")
    await object_store.delete("deep/er/est/only")
    assert await keys_under(object_store, "deep/") == []
    await object_store.put_if_absent("deep/er/est/only", b"2")
    assert await object_store.get("deep/er/est/only") == b"2"


LIST_KEYS = [
    "a",
    "a/b",
    "a/b/c",
    "a/bb",
    "a-b",
    "a.b",
    "ab",
    "a~obj",
    "a~~/x",
    "b",
    "tier/topic=orders/partition=0/00000000000000000000-00000000000000000099.avro",
    "tier/topic=orders/partition=0/00000000000000000100-00000000000000000199.avro",
    "tier/topic=orders/partition=1/00000000000000000000-00000000000000000009.avro",
    "tier/topic=orders2/partition=0/00000000000000000000-00000000000000000009.avro",
    "tier/topic=pay%2Fments/partition=0/x.avro",
    "z",
    "\u00e9t\u00e9",
    "\u4e2d\u6587/\u00e9",
]


LIST_PREFIXES = [
    "", "a", "a/", "a/b", "a/b/", "a/b/c", "a/b/c/", "a-", "a~", "b", "tier/", "tier/topic=orders",
    "tier/topic=orders/partition=0/", "tier/topic=orders/partition=0/000000000000000001", "nothing",
    "\u00e9", "\u4e2d\u6587/", "a//", "../",
]


async def test_list_is_lexical_and_prefix_filtered(object_store: ObjectStore) -> None:
    for i, key in enumerate(LIST_KEYS):
        await object_store.put_if_absent(key, b"x" * i)
    sizes = {k: i for i, k in enumerate(LIST_KEYS)}
    for prefix in LIST_PREFIXES:
        listed = [info async for info in object_store.list(prefix)]
        expected = sorted((k for k in LIST_KEYS if k.startswith(prefix)), key=lambda k: k.encode())
        assert [info.key for info in listed] == expected, f"prefix={prefix!r}"
        assert all(info.size == sizes[info.key] for info in listed), f"prefix={prefix!r}"


async def test_key_can_be_both_an_object_and_a_prefix(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("seg", b"outer")
    await object_store.put_if_absent("seg/inner", b"inner")
    assert await object_store.get("seg") == b"outer"
    assert await object_store.get("seg/inner") == b"inner"
    await object_store.delete("seg")
    assert await keys_under(object_store, "seg") == ["seg/inner"]


@pytest.mark.slow
async def test_list_spans_pages(object_store: ObjectStore) -> None:
    """More keys than one S3 list response (1000) holds."""
    keys = [f"many/{i:05d}" for i in range(1001)]
    semaphore = asyncio.Semaphore(16)

    async def put(key: str) -> None:
        async with semaphore:
            await object_store.put_if_absent(key, b"")

    await asyncio.gather(*(put(k) for k in keys))
    assert await keys_under(object_store, "many/") == keys
    assert await keys_under(object_store, "many/0099") == keys[990:1000]


async def test_concurrent_put_if_absent_has_exactly_one_winner(object_store: ObjectStore) -> None:
    contents = [bytes([i]) * (256 * 1024 + i) for i in range(8)]

    async def attempt(data: bytes) -> bytes | None:
        try:
            await object_store.put_if_absent("contended/key", data)
        except AlreadyExists:
            return None
        return data

    results = await asyncio.gather(*(attempt(c) for c in contents))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await object_store.get("contended/key") == winners[0]
    assert await keys_under(object_store, "contended/") == ["contended/key"]


async def test_concurrent_puts_of_distinct_keys_all_land(object_store: ObjectStore) -> None:
    keys = [f"fresh/dir/{i:02d}" for i in range(20)]
    await asyncio.gather(*(object_store.put_if_absent(k, k.encode()) for k in keys))
    assert await keys_under(object_store, "fresh/") == keys
    assert [await object_store.get(k) for k in keys] == [k.encode() for k in keys]


async def test_ensure_is_idempotent(object_store: ObjectStore) -> None:
    await object_store.put_if_absent("kept", b"1")
    await object_store.ensure(create=True)
    await object_store.ensure(create=False)
    assert await object_store.get("kept") == b"1"


async def test_stats_count_requests(object_store: ObjectStore) -> None:
    before = dict(object_store.stats.requests)
    await object_store.put_if_absent("counted", b"1")
    with pytest.raises(AlreadyExists):
        await object_store.put_if_absent("counted", b"2")
    await object_store.get("counted")
    await object_store.head("counted")
    await keys_under(object_store, "")
    await object_store.delete("counted")
    after = object_store.stats.requests
    moved = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert moved["PutObject"] == 2
    assert moved["GetObject"] == 1
    assert moved["HeadObject"] == 1
    assert moved["ListObjectsV2"] == 1
    assert moved["DeleteObject"] == 1
