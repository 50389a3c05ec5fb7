"""The metadata-store contract (see `tidelog.storage.ports`), run against every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidelog.storage.conditions import (
    ABSENT,
    EXISTS,
    MAX_WRITE_OPS,
    Check,
    Compare,
    Condition,
    Delete,
    Put,
    WriteOp,
    where,
)
from tidelog.storage.errors import Conflict, InvalidRequest
from tidelog.storage.model import Item
from tidelog.storage.ports import MetaStore


def backend(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["meta_store"]


async def outcome(store: MetaStore, ops: list[WriteOp]) -> Conflict | None:
    """None when the write applied, the Conflict when it did not."""
    try:
        await store.write(ops)
    except Conflict as conflict:
        return conflict
    return None


def test_adapter_implements_the_port(meta_store: MetaStore) -> None:
    assert isinstance(meta_store, MetaStore)


async def test_get_missing_is_none(meta_store: MetaStore) -> None:
    assert await meta_store.get("nobody", "nothing") is None


VALUES: dict[str, Any] = {
    "text": "h\u00e9llo \u4e16\u754c \U0001f600",
    "empty_text": "",
    "zero": 0,
    "negative": -7,
    "max_i64": 2**63 - 1,
    "min_i64": -(2**63),
    "two_to_63": 2**63,
    "true": True,
    "false": False,
    "one": 1,
    "null": None,
    "list": [1, "two", True, None, [], {}, ""],
    "empty_list": [],
    "empty_map": {},
    "nested": {"a": {"b": [{"c": ["", 2**62, {"d": None}]}]}, "k\u00e9y": "x", "flag": False},
}


async def test_values_round_trip(meta_store: MetaStore) -> None:
    item = Item("values", "all", VALUES)
    await meta_store.write([Put(item)])
    stored = await meta_store.get("values", "all")
    assert stored == item
    # bool and int stay distinct after the round trip
    assert type(stored.attrs["true"]) is bool and type(stored.attrs["one"]) is int
    assert type(stored.attrs["false"]) is bool and type(stored.attrs["zero"]) is int
    assert [type(v) for v in stored.attrs["list"][:3]] == [int, str, bool]


async def test_put_replaces_the_whole_item(meta_store: MetaStore) -> None:
    await meta_store.write([Put(Item("p", "s", {"a": 1, "b": 2}))])
    await meta_store.write([Put(Item("p", "s", {"a": 3}))])
    assert await meta_store.get("p", "s") == Item("p", "s", {"a": 3})


UNSUPPORTED: dict[str, dict[str, Any]] = {
    "float": {"f": 1.5},
    "nested-float": {"nested": {"f": 0.0}},
    "float-in-list": {"in_list": [1, 2.0]},
    "bytes": {"b": b"raw"},
    "reserved-pk": {"pk": "x"},
    "reserved-sk": {"sk": "x"},
    "empty-name": {"": 1},
    "empty-map-key": {"m": {"": 1}},
    "tuple": {"t": (1, 2)},
    "above-2**63": {"big": 2**63 + 1},
    "below-minus-2**63": {"small": -(2**63) - 1},
}


async def test_unsupported_values_are_rejected(meta_store: MetaStore) -> None:
    failures = []
    for name, attrs in UNSUPPORTED.items():
        item = Item("bad", name, attrs)
        for call in (lambda: meta_store.write([Put(item)]), lambda: meta_store.put_many([item])):
            try:
                await call()
            except InvalidRequest:
                continue
            except Exception as exc:  # noqa: BLE001 - reported below with the case name
                failures.append(f"{name}: raised {exc!r}")
            else:
                failures.append(f"{name}: accepted")
    assert not failures, "\n".join(failures)
    assert await meta_store.query("bad") == []


# --- conditions ----------------------------------------------------------------
STORED = {"n": 5, "s": "m", "b": True, "i": 1, "l": [1, 2]}

# (condition, holds when the item is STORED, holds when the item is absent)
CONDITION_CASES: list[tuple[str, Condition | None, bool, bool]] = [
    ("none", None, True, True),
    ("absent", ABSENT, False, True),
    ("exists", EXISTS, True, False),
    ("where-eq", where(n=5), True, False),
    ("where-ne", where(n=6), False, False),
    ("where-two-true", where(n=5, s="m"), True, False),
    ("where-two-one-false", where(n=5, s="x"), False, False),
    ("where-list", where(l=[1, 2]), True, False),
    ("eq", EXISTS.and_("n", "=", 5), True, False),
    ("eq-false", EXISTS.and_("n", "=", 4), False, False),
    ("ne-false", EXISTS.and_("n", "<>", 5), False, False),
    ("ne-true", EXISTS.and_("n", "<>", 6), True, False),
    ("lt-true", EXISTS.and_("n", "<", 6), True, False),
    ("lt-false", EXISTS.and_("n", "<", 5), False, False),
    ("le-true", EXISTS.and_("n", "<=", 5), True, False),
    ("le-false", EXISTS.and_("n", "<=", 4), False, False),
    ("gt-true", EXISTS.and_("n", ">", 4), True, False),
    ("gt-false", EXISTS.and_("n", ">", 5), False, False),
    ("ge-true", EXISTS.and_("n", ">=", 5), True, False),
    ("ge-false", EXISTS.and_("n", ">=", 6), False, False),
    ("negative-bound", EXISTS.and_("n", ">", -(2**63)), True, False),
    ("string-lt", EXISTS.and_("s", "<", "n"), True, False),
    ("string-gt", EXISTS.and_("s", ">", "a"), True, False),
    ("string-ge-false", EXISTS.and_("s", ">=", "ma"), False, False),
    ("range-conjunction", EXISTS.and_("n", ">", 1).and_("n", "<", 9), True, False),
    ("range-conjunction-false", EXISTS.and_("n", ">", 1).and_("n", "<", 5), False, False),
    ("exists-unset-with-compare", Condition(None, (Compare("n", "=", 5),)), True, False),
    ("bool-is-not-int", where(b=1), False, False),
    ("int-is-not-bool", where(i=True), False, False),
    ("bool-eq", where(b=True), True, False),
    ("bool-ne-int", EXISTS.and_("b", "<>", 1), True, False),
    ("int-eq", where(i=1), True, False),
    ("string-is-not-int", where(s=5), False, False),
    ("missing-attr-eq", EXISTS.and_("missing", "=", 1), False, False),
    ("missing-attr-ne", EXISTS.and_("missing", "<>", 1), False, False),
    ("missing-attr-lt", EXISTS.and_("missing", "<", 1), False, False),
    ("missing-attr-le", EXISTS.and_("missing", "<=", 1), False, False),
    ("missing-attr-gt", EXISTS.and_("missing", ">", 1), False, False),
    ("missing-attr-ge", EXISTS.and_("missing", ">=", 1), False, False),
    ("bool-gt", EXISTS.and_("b", ">", False), True, False),
    ("bool-lt-false", EXISTS.and_("b", "<", True), False, False),
    ("bool-le", EXISTS.and_("b", "<=", True), True, False),
    ("key-attrs-are-not-attributes", EXISTS.and_("pk", "=", "cond"), False, False),
]


@pytest.mark.parametrize("op_kind", ["put", "delete", "check"])
async def test_every_condition_form(meta_store: MetaStore, op_kind: str) -> None:
    """Each case runs on its own item, both present (as STORED) and absent."""
    await meta_store.put_many([Item("cond", f"{name}#present", STORED) for name, *_ in CONDITION_CASES])
    failures = []
    for name, condition, when_present, when_absent in CONDITION_CASES:
        for state, expected in (("present", when_present), ("absent", when_absent)):
            sk = f"{name}#{state}"
            before = Item("cond", sk, STORED) if state == "present" else None
            if op_kind == "put":
                op: WriteOp = Put(Item("cond", sk, {"written": True}), condition)
                applied = Item("cond", sk, {"written": True})
            elif op_kind == "delete":
                op, applied = Delete("cond", sk, condition), None
            else:
                if condition is None:
                    continue  # a Check always carries a condition
                op, applied = Check("cond", sk, condition), before
            conflict = await outcome(meta_store, [op])
            after = await meta_store.get("cond", sk)
            if expected:
                ok = conflict is None and after == applied
            else:
                ok = conflict is not None and conflict.index == 0 and conflict.current == before and after == before
            if not ok:
                failures.append(f"{name}/{state}: expected {'apply' if expected else 'conflict'}, got {conflict!r}")
    assert not failures, "\n".join(failures)


async def test_null_attribute_compares_like_a_missing_one(meta_store: MetaStore) -> None:
    """`conditions.evaluate` reads a stored None as missing: every comparison with it is false."""
    await meta_store.write([Put(Item("null", "x", {"owner": None, "n": 1}))])
    for condition in (where(owner=None), EXISTS.and_("owner", "<>", "me"), EXISTS.and_("owner", "=", "me")):
        conflict = await outcome(meta_store, [Put(Item("null", "x", {"owner": "me"}), condition)])
        assert conflict is not None, condition
    assert await meta_store.get("null", "x") == Item("null", "x", {"owner": None, "n": 1})


async def test_ordering_needs_a_scalar(meta_store: MetaStore) -> None:
    await meta_store.write([Put(Item("ord", "x", {"v": 1}))])
    for value in ([1], {"a": 1}):
        with pytest.raises(InvalidRequest):
            await meta_store.write([Put(Item("ord", "x", {"v": 2}), EXISTS.and_("v", "<", value))])
    # nothing is ordered against None: a plain conflict
    assert await outcome(meta_store, [Put(Item("ord", "x", {"v": 2}), EXISTS.and_("v", "<", None))]) is not None
    assert await meta_store.get("ord", "x") == Item("ord", "x", {"v": 1})


# --- multi-operation writes ---------------------------------------------------------
async def seed_group(store: MetaStore) -> list[Item]:
    items = [Item("grp", "a", {"v": 1}), Item("grp", "b", {"v": 1}), Item("grp", "d", {"v": 1})]
    await store.put_many(items)
    return items


@pytest.mark.parametrize(
    ("failing_index", "failing_op", "expected_current"),
    [
        (0, Put(Item("grp", "a", {"v": 9}), where(v=2)), Item("grp", "a", {"v": 1})),
        (1, Put(Item("grp", "c", {"v": 9}), EXISTS), None),
        (2, Check("grp", "b", where(v=99)), Item("grp", "b", {"v": 1})),
        (3, Delete("grp", "d", ABSENT), Item("grp", "d", {"v": 1})),
        (3, Check("grp", "zz", EXISTS), None),
    ],
    ids=["put-first", "put-missing", "check-middle", "delete-last", "check-missing-last"],
)
async def test_failed_multi_op_write_applies_nothing(
    meta_store: MetaStore, failing_index: int, failing_op: WriteOp, expected_current: Item | None
) -> None:
    seeded = await seed_group(meta_store)
    ops: list[WriteOp] = [
        Put(Item("grp", "a", {"v": 2}), where(v=1)),
        Put(Item("grp", "c", {"v": 1}), ABSENT),
        Check("grp", "b", where(v=1)),
        Delete("grp", "d", EXISTS),
    ]
    ops[failing_index] = failing_op
    with pytest.raises(Conflict) as raised:
        await meta_store.write(ops)
    assert raised.value.index == failing_index
    assert raised.value.current == expected_current
    assert await meta_store.query("grp") == seeded


async def test_multi_op_write_applies_everything(meta_store: MetaStore) -> None:
    await seed_group(meta_store)
    await meta_store.write(
        [
            Put(Item("grp", "a", {"v": 2}), where(v=1)),
            Put(Item("grp", "c", {"v": 1}), ABSENT),
            Check("grp", "b", where(v=1)),
            Delete("grp", "d", EXISTS),
            Put(Item("other", "x", {"v": 1})),
        ]
    )
    assert await meta_store.query("grp") == [
        Item("grp", "a", {"v": 2}),
        Item("grp", "b", {"v": 1}),
        Item("grp", "c", {"v": 1}),
    ]
    assert await meta_store.get("other", "x") == Item("other", "x", {"v": 1})


async def test_write_of_the_maximum_op_count(meta_store: MetaStore) -> None:
    ops = [Put(Item("max", f"{i:03d}", {"i": i}), ABSENT) for i in range(MAX_WRITE_OPS)]
    await meta_store.write(ops)
    assert len(await meta_store.query("max")) == MAX_WRITE_OPS


async def test_delete_with_condition(meta_store: MetaStore) -> None:
    await meta_store.write([Put(Item("del", "x", {"v": 1}))])
    conflict = await outcome(meta_store, [Delete("del", "x", where(v=2))])
    assert conflict is not None and conflict.current == Item("del", "x", {"v": 1})
    await meta_store.write([Delete("del", "x", where(v=1))])
    assert await meta_store.get("del", "x") is None
    await meta_store.write([Delete("del", "x")])  # unconditional delete of a missing item
    conflict = await outcome(meta_store, [Delete("del", "x", EXISTS)])
    assert conflict is not None and conflict.current is None and conflict.index == 0


MALFORMED_WRITES: dict[str, list[WriteOp]] = {
    "no-ops": [],
    "too-many": [Put(Item("many", f"{i:03d}")) for i in range(MAX_WRITE_OPS + 1)],
    "duplicate-puts": [Put(Item("dup", "x", {"v": 1})), Put(Item("dup", "x", {"v": 2}))],
    "put-and-delete": [Put(Item("dup", "x", {"v": 1})), Delete("dup", "x")],
    "check-and-delete": [Check("dup", "x", EXISTS), Delete("dup", "x")],
}


async def test_malformed_writes_are_rejected(meta_store: MetaStore) -> None:
    for name, ops in MALFORMED_WRITES.items():
        with pytest.raises(InvalidRequest):
            await meta_store.write(ops)
        assert await meta_store.query("many") == [] and await meta_store.query("dup") == [], name


# --- query -------------------------------------------------------------------------
QUERY_SKS = ["a", "a#1", "a#10", "a#2", "a#2#x", "b", "b#1", "c", "z", "\u00e9", "\u4e2d"]


def reference_query(
    prefix: str = "", after: str | None = None, before: str | None = None, reverse: bool = False, limit: int | None = None
) -> list[str]:
    sks = sorted(QUERY_SKS, key=lambda s: s.encode())
    sks = [s for s in sks if s.startswith(prefix)]
    sks = [s for s in sks if (after is None or s > after) and (before is None or s < before)]
    if reverse:
        sks.reverse()
    return sks if limit is None else sks[:limit]


QUERY_CASES: list[dict[str, Any]] = [
    {},
    {"reverse": True},
    {"prefix": "a"},
    {"prefix": "a#"},
    {"prefix": "a#2"},
    {"prefix": "q"},
    {"prefix": "\u00e9"},
    {"after": "a#1"},
    {"after": "a"},
    {"before": "b"},
    {"before": "a"},
    {"after": "a#10", "before": "b#1"},
    {"after": "b", "before": "b"},
    {"after": "c", "before": "b"},
    {"prefix": "a#", "after": "a#1"},
    {"prefix": "a#", "before": "a#2"},
    {"prefix": "a#", "after": "a#1", "before": "a#2#x"},
    {"prefix": "a", "after": "Z", "before": "zz"},
    {"prefix": "b", "after": "a#2"},
    {"limit": 1},
    {"limit": 3},
    {"limit": 100},
    {"reverse": True, "limit": 2},
    {"reverse": True, "limit": 1, "before": "b"},
    {"reverse": True, "limit": 2, "after": "a#2"},
    {"reverse": True, "limit": 2, "prefix": "a#"},
    {"after": "a", "limit": 2},
    {"after": "a", "before": "c", "limit": 2, "reverse": True},
    {"prefix": "a#", "after": "a#1", "limit": 2},
    {"prefix": "a#", "before": "a#2#x", "limit": 2, "reverse": True},
]


async def test_query_order_bounds_prefix_and_limit(meta_store: MetaStore) -> None:
    await meta_store.put_many([Item("q", sk, {"v": sk}) for sk in QUERY_SKS])
    # neighbours that must never leak into pk "q"
    await meta_store.put_many([Item("q2", "a", {"v": "x"}), Item("qq", "a#1", {"v": "x"}), Item("Q", "b", {})])
    failures = []
    for case in QUERY_CASES:
        got = await meta_store.query("q", **case)
        expected = reference_query(**case)
        if [item.sk for item in got] != expected or any(item.attrs != {"v": item.sk} for item in got):
            failures.append(f"{case}: expected {expected}, got {[i.sk for i in got]}")
    assert not failures, "\n".join(failures)
    assert await meta_store.query("absent-pk") == []


async def test_query_limit_must_be_positive(meta_store: MetaStore) -> None:
    with pytest.raises(InvalidRequest):
        await meta_store.query("q", limit=0)


async def test_query_spans_response_pages(meta_store: MetaStore) -> None:
    """DynamoDB returns at most 1 MB per Query response; the result must still be complete."""
    blob = "x" * (100 * 1024)
    items = [Item("big", f"{i:02d}", {"blob": blob, "i": i}) for i in range(14)]
    await meta_store.put_many(items)
    assert await meta_store.query("big") == items
    assert await meta_store.query("big", limit=12) == items[:12]
    assert await meta_store.query("big", reverse=True, limit=12) == items[::-1][:12]
    assert await meta_store.query("big", after="01", before="13") == items[2:13]


# --- put_many ------------------------------------------------------------------------
async def test_put_many_beyond_one_batch(meta_store: MetaStore) -> None:
    await meta_store.write([Put(Item("pm", "000", {"old": True, "extra": 1}))])
    items = [Item("pm", f"{i:03d}", {"i": i, "tags": ["x", ""]}) for i in range(60)]
    await meta_store.put_many(items)
    assert await meta_store.query("pm") == items  # whole items replaced, none lost
    await meta_store.put_many([])


async def test_put_many_last_duplicate_wins(meta_store: MetaStore) -> None:
    await meta_store.put_many([Item("dups", "x", {"v": 1}), Item("dups", "y", {"v": 1}), Item("dups", "x", {"v": 2})])
    assert await meta_store.query("dups") == [Item("dups", "x", {"v": 2}), Item("dups", "y", {"v": 1})]


# --- stats ---------------------------------------------------------------------------
async def test_stats_count_requests_and_units(meta_store: MetaStore) -> None:
    stats = meta_store.stats
    requests_before, writes_before, reads_before = dict(stats.requests), stats.write_units, stats.read_units

    def moved(name: str) -> int:
        return stats.requests.get(name, 0) - requests_before.get(name, 0)

    await meta_store.write([Put(Item("st", "a", {"v": 1}), ABSENT)])
    assert moved("PutItem") == 1 and stats.write_units - writes_before == 1
    await outcome(meta_store, [Put(Item("st", "a", {"v": 1}), ABSENT)])  # failed writes are billed too
    assert moved("PutItem") == 2 and stats.write_units - writes_before == 2
    await meta_store.write([Put(Item("st", "b", {"v": 1})), Check("st", "a", EXISTS)])
    assert moved("TransactWriteItems") == 1 and stats.write_units - writes_before == 2 + 2 * 2
    await meta_store.write([Delete("st", "b")])
    assert moved("DeleteItem") == 1 and stats.write_units - writes_before == 7
    await meta_store.put_many([Item("st", f"m{i:02d}", {"i": i}) for i in range(30)])
    assert moved("BatchWriteItem") == 2 and stats.write_units - writes_before == 37
    await meta_store.get("st", "a")
    await meta_store.get("st", "nothing")
    assert moved("GetItem") == 2 and stats.read_units - reads_before == 2
    await meta_store.query("st")
    assert moved("Query") == 1 and stats.read_units - reads_before == 3


# --- concurrency ---------------------------------------------------------------------
@pytest.mark.parametrize("from_state", ["absent", "version"])
async def test_racing_conditional_writes_have_one_winner(meta_store: MetaStore, from_state: str) -> None:
    """16 would-be lease holders race; every loser learns the winner's state from the Conflict."""
    if from_state == "absent":
        condition = ABSENT
    else:
        await meta_store.write([Put(Item("lease", "p0", {"owner": "", "ver": 0}))])
        condition = where(ver=0)

    async def acquire(i: int) -> Conflict | None:
        return await outcome(meta_store, [Put(Item("lease", "p0", {"owner": f"task-{i}", "ver": 1}), condition)])

    results = await asyncio.gather(*(acquire(i) for i in range(16)))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    winner_item = Item("lease", "p0", {"owner": f"task-{winners[0]}", "ver": 1})
    assert await meta_store.get("lease", "p0") == winner_item
    assert all(r.current == winner_item and r.index == 0 for r in results if r is not None)


async def cas_increments(store: MetaStore, worker: str, count: int, transactional: bool) -> list[int]:
    """Increment the counter ``count`` times by compare-and-set; return the values this worker wrote."""
    item = await store.get("ctr", "n")
    current = item.attrs["n"]
    written: list[int] = []
    while len(written) < count:
        new = current + 1
        ops: list[WriteOp] = [Put(Item("ctr", "n", {"n": new, "by": worker}), where(n=current))]
        if transactional:  # the claim makes a double assignment of `new` fail loudly
            ops.append(Put(Item("ctr", f"claim#{new:06d}", {"by": worker}), ABSENT))
        conflict = await outcome(store, ops)
        if conflict is None:
            written.append(new)
            current = new
        else:
            assert conflict.index == 0, f"claim #{new} taken although the counter said {current}"
            current = conflict.current.attrs["n"]
    return written


@pytest.mark.parametrize("transactional", [False, True], ids=["single", "transaction"])
async def test_cas_increments_lose_no_update(
    meta_store: MetaStore, request: pytest.FixtureRequest, transactional: bool
) -> None:
    tasks, each = (8, 20) if backend(request) == "local" else (4, 10)
    await meta_store.write([Put(Item("ctr", "n", {"n": 0}))])
    results = await asyncio.gather(
        *(cas_increments(meta_store, f"w{i}", each, transactional) for i in range(tasks))
    )
    written = sorted(v for r in results for v in r)
    assert written == list(range(1, tasks * each + 1))
    assert (await meta_store.get("ctr", "n")).attrs["n"] == tasks * each
    if transactional:
        assert len(await meta_store.query("ctr", prefix="claim#")) == tasks * each
