"""What only the embedded backend promises: on-disk layout, crash leftovers,
key rules, SQLite durability and cross-process linearizability."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.storage.adapters import localdir
from tidelog.storage.adapters.localdir import LocalObjectStore
from tidelog.storage.adapters.sqlite import SqliteMetaStore, check_value, prefix_upper_bound
from tidelog.storage.conditions import ABSENT, Put, where
from tidelog.storage.errors import CorruptData, Internal, InvalidRequest, NotFound, Unavailable
from tidelog.storage.model import Item

CHILD_ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture
async def objects(tmp_path: Path):
    store = await LocalObjectStore.open(tmp_path / "objects")
    await store.ensure(create=True)
    yield store
    await store.close()


@pytest.fixture
async def meta(tmp_path: Path):
    store = await SqliteMetaStore.open(tmp_path / "meta.db")
    await store.ensure(create=True)
    yield store
    await store.close()


async def run_child(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=CHILD_ENV,
    )


# --- object store: layout and names --------------------------------------------------
segments = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(segments)
def test_names_parse_back_to_their_segment(segment: str) -> None:
    if segment in (".", ".."):
        return
    assert localdir.parse_name(localdir.object_name(segment)) == ("object", segment)
    assert localdir.parse_name(localdir.dir_name(segment)) == ("dir", segment)
    assert localdir.parse_name(localdir.temp_name(segment)) == ("temp", segment)


@given(segments, segments)
def test_directory_and_object_names_never_collide(a: str, b: str) -> None:
    assert localdir.dir_name(a) != localdir.object_name(b)
    assert localdir.dir_name(a) != localdir.temp_name(b)


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a/", "a//b", "..", "a/../b", "./a", "a/./b", "nul\0byte", "x" * 1025, "lone\ud800surrogate",
     "long/" + "y" * 300],
    ids=["empty", "absolute", "trailing-slash", "empty-segment", "dotdot", "dotdot-inside", "dot", "dot-inside",
         "nul", "too-long", "surrogate", "segment-too-long"],
)
async def test_invalid_keys_are_rejected(objects: LocalObjectStore, key: str) -> None:
    with pytest.raises(InvalidRequest):
        await objects.put_if_absent(key, b"x")
    with pytest.raises(InvalidRequest):
        await objects.get(key)
    with pytest.raises(InvalidRequest):
        await objects.head(key)
    with pytest.raises(InvalidRequest):
        await objects.delete(key)
    assert list(objects.root.iterdir()) == []  # nothing touched the disk
    assert sorted(p.name for p in objects.root.parent.iterdir()) == ["objects"]


async def test_longest_segment_fits(objects: LocalObjectStore) -> None:
    key = "d/" + "~" * 117  # 234 bytes once escaped
    await objects.put_if_absent(key, b"x")
    assert [i.key async for i in objects.list("")] == [key]
    with pytest.raises(InvalidRequest):
        await objects.put_if_absent(key + "~", b"x")


async def test_etag_names_the_object_version_and_file_layout(objects: LocalObjectStore) -> None:
    etag = await objects.put_if_absent("ingest/1-3/000000000001.avro", b"payload")
    path = objects.root / "ingest" / "1-3" / "000000000001.avro~obj"
    assert path.read_bytes() == b"payload"
    st = path.stat()
    assert etag == f"{st.st_ino:x}-{st.st_mtime_ns:x}-7"
    assert await objects.put_if_absent("ingest/1-3/000000000002.avro", b"payload") != etag


CRASHING_PUT = r"""
import asyncio, os, sys
from tidelog.storage.adapters.localdir import LocalObjectStore

def crash(src, dst):
    os._exit(17)  # power cut after the temp file is written and fsynced, before publication

os.link = crash

async def main():
    store = await LocalObjectStore.open(sys.argv[1])
    await store.put_if_absent(sys.argv[2], b"half-done")

asyncio.run(main())
"""


async def test_crash_before_publication_leaves_only_an_invisible_temp_file(objects: LocalObjectStore) -> None:
    child = await run_child(CRASHING_PUT, str(objects.root), "ingest/s/crashed")
    assert await child.wait() == 17
    directory = objects.root / "ingest" / "s"
    temps = [p.name for p in directory.iterdir()]
    assert len(temps) == 1 and localdir.parse_name(temps[0]) == ("temp", "crashed")
    assert (directory / temps[0]).read_bytes() == b"half-done"

    with pytest.raises(NotFound):
        await objects.get("ingest/s/crashed")
    assert [i async for i in objects.list("")] == []

    await objects.put_if_absent("ingest/s/crashed", b"complete")
    assert await objects.get("ingest/s/crashed") == b"complete"
    assert [i.key async for i in objects.list("ingest/")] == ["ingest/s/crashed"]


async def test_foreign_files_are_ignored(objects: LocalObjectStore) -> None:
    await objects.put_if_absent("d/real", b"1")
    (objects.root / "d" / "README").mkdir()  # a stray directory is a prefix with no objects
    (objects.root / "d" / "notes~txt").write_bytes(b"x")
    (objects.root / "d" / "~obj").write_bytes(b"x")
    assert [i.key async for i in objects.list("")] == ["d/real"]


async def test_delete_prunes_empty_directories_only(objects: LocalObjectStore) -> None:
    await objects.put_if_absent("p/q/r/one", b"1")
    await objects.put_if_absent("p/two", b"2")
    await objects.delete("p/q/r/one")
    assert not (objects.root / "p" / "q").exists()
    assert (objects.root / "p").is_dir()
    await objects.delete("p/two")
    assert list(objects.root.iterdir()) == []
    assert objects.root.is_dir()


async def test_puts_racing_deletes_that_prune_their_directory(objects: LocalObjectStore) -> None:
    async def churn(worker: int) -> None:
        for i in range(40):
            key = f"churn/x/{worker}-{i}"
            await objects.put_if_absent(key, b"v")
            assert await objects.get(key) == b"v"
            await objects.delete(key)

    await asyncio.gather(*(churn(w) for w in range(6)))
    assert [i async for i in objects.list("")] == []


async def test_missing_directory_needs_init(tmp_path: Path) -> None:
    store = await LocalObjectStore.open(tmp_path / "nowhere")
    with pytest.raises(NotFound, match="tidelog init"):
        await store.ensure(create=False)
    with pytest.raises(NotFound, match="tidelog init"):
        await store.put_if_absent("a/b", b"x")
    with pytest.raises(NotFound, match="tidelog init"):
        await store.get("a")
    with pytest.raises(NotFound, match="tidelog init"):
        [i async for i in store.list("")]
    assert not (tmp_path / "nowhere").exists()
    await store.ensure(create=True)
    await store.ensure(create=True)
    await store.ensure(create=False)
    await store.close()
    with pytest.raises(Internal):
        await store.get("a")


# --- metadata store ---------------------------------------------------------------------
async def test_missing_database_needs_init(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "meta.db"
    async with await SqliteMetaStore.open(path) as store:
        with pytest.raises(NotFound, match="tidelog init"):
            await store.ensure(create=False)
        with pytest.raises(NotFound, match="tidelog init"):
            await store.get("a", "b")
        assert not path.exists()
        await store.ensure(create=True)
        await store.ensure(create=True)
        await store.ensure(create=False)

    sqlite3.connect(tmp_path / "empty.db").close()  # a database without our table
    async with await SqliteMetaStore.open(tmp_path / "empty.db") as store:
        with pytest.raises(NotFound, match="tidelog init"):
            await store.ensure(create=False)
        with pytest.raises(NotFound, match="tidelog init"):
            await store.query("a")


async def test_garbage_file_is_corrupt_data(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    async with await SqliteMetaStore.open(tmp_path / "junk.db") as store:
        with pytest.raises(CorruptData):
            await store.ensure(create=False)


async def test_wal_mode_and_full_sync(meta: SqliteMetaStore) -> None:
    await meta.write([Put(Item("a", "b"))])
    with sqlite3.connect(meta.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    synchronous = await meta._run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
    assert synchronous == 2  # FULL


async def test_data_survives_reopen(tmp_path: Path) -> None:
    async with await SqliteMetaStore.open(tmp_path / "meta.db") as store:
        await store.ensure(create=True)
        await store.write([Put(Item("t", "x", {"n": 2**63, "b": True}))])
        await store.put_many([Item("t", f"{i}", {"i": i}) for i in range(5)])
    async with await SqliteMetaStore.open(tmp_path / "meta.db") as store:
        await store.ensure(create=False)
        assert await store.get("t", "x") == Item("t", "x", {"n": 2**63, "b": True})
        assert len(await store.query("t")) == 6


ACKING_WRITER = r"""
import asyncio, sys
from tidelog.storage.adapters.sqlite import SqliteMetaStore
from tidelog.storage.conditions import ABSENT, Put
from tidelog.storage.model import Item

async def main():
    store = await SqliteMetaStore.open(sys.argv[1])
    i = 0
    while True:
        await store.write([Put(Item("acked", f"{i:08d}", {"i": i}), ABSENT)])
        print(i, flush=True)
        i += 1

asyncio.run(main())
"""


async def test_acknowledged_writes_survive_a_killed_process(meta: SqliteMetaStore) -> None:
    child = await run_child(ACKING_WRITER, str(meta.path))
    acked = -1
    while acked < 30:
        acked = int(await child.stdout.readline())
    child.kill()
    await child.wait()
    items = await meta.query("acked")
    assert [item.attrs["i"] for item in items[: acked + 1]] == list(range(acked + 1))


async def test_locked_database_becomes_unavailable_then_recovers(meta: SqliteMetaStore, tmp_path: Path) -> None:
    await meta.write([Put(Item("lock", "x", {"v": 1}))])
    impatient = await SqliteMetaStore.open(meta.path, busy_timeout_s=0.01, lock_wait_s=0.05)
    holder = sqlite3.connect(meta.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(Unavailable, match="locked"):
            await impatient.write([Put(Item("lock", "x", {"v": 2}))])
        assert await impatient.get("lock", "x") == Item("lock", "x", {"v": 1})  # WAL: readers never wait
        holder.execute("ROLLBACK")
        await impatient.write([Put(Item("lock", "x", {"v": 2}), where(v=1))])
        assert await meta.get("lock", "x") == Item("lock", "x", {"v": 2})
    finally:
        holder.close()
        await impatient.close()


CAS_WORKER = r"""
import asyncio, json, sys
from tidelog.storage.adapters.sqlite import SqliteMetaStore
from tidelog.storage.conditions import Put, where
from tidelog.storage.errors import Conflict
from tidelog.storage.model import Item

async def main(path, worker, count):
    async with await SqliteMetaStore.open(path) as store:
        await store.ensure(create=False)
        print("ready", flush=True)
        sys.stdin.readline()  # start together, so the processes really race
        current = (await store.get("ctr", "n")).attrs["n"]
        written = []
        while len(written) < count:
            try:
                await store.write([Put(Item("ctr", "n", {"n": current + 1, "by": worker}), where(n=current))])
            except Conflict as conflict:
                current = conflict.current.attrs["n"]
            else:
                current += 1
                written.append(current)
        print(json.dumps(written), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_cas_increments_across_processes_lose_no_update(meta: SqliteMetaStore) -> None:
    processes, each = 3, 30
    await meta.write([Put(Item("ctr", "n", {"n": 0}), ABSENT)])
    children = [await run_child(CAS_WORKER, str(meta.path), f"p{i}", str(each)) for i in range(processes)]
    for child in children:
        assert (await child.stdout.readline()).strip() == b"ready"
    for child in children:
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    written: list[int] = []
    for child in children:
        written += json.loads(await child.stdout.readline())
        assert await child.wait() == 0
    assert sorted(written) == list(range(1, processes * each + 1))
    assert (await meta.get("ctr", "n")).attrs["n"] == processes * each


# --- pure helpers of the SQLite adapter ---------------------------------------------
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


@given(text, text)
def test_prefix_upper_bound_brackets_exactly_the_prefixed_strings(prefix: str, s: str) -> None:
    upper = prefix_upper_bound(prefix)
    inside = prefix <= s and (upper is None or s < upper)
    assert inside == s.startswith(prefix)


def test_prefix_upper_bound_edges() -> None:
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\ud7ff") == "\ue000"


@pytest.mark.parametrize(
    "value",
    [2**63 + 1, -(2**63) - 1, {"a": 1.0}, (1, 2), {1: "x"}, {"": 1}, set(), "lone\udc00", 1.5, float("nan")],
    ids=["above-2**63", "below-minus-2**63", "float-in-map", "tuple", "int-map-key", "empty-map-key", "set",
         "surrogate", "float", "nan"],
)
def test_values_dynamodb_cannot_store_are_rejected(value: object) -> None:
    with pytest.raises(InvalidRequest):
        check_value(value)


def test_nesting_limit() -> None:
    deep: object = "leaf"
    for _ in range(32):
        deep = [deep]
    check_value(deep)
    with pytest.raises(InvalidRequest):
        check_value([deep])
