"""The metadata-store port on SQLite (the embedded backend).

One table, ``items(pk, sk, attrs JSON)``, in WAL mode with
``synchronous=FULL``: an acknowledged write is in the fsynced WAL.

Invariants:

* Linearizable writes across tasks, threads and processes.  Each `write`
  runs inside one ``BEGIN IMMEDIATE`` transaction, which takes the database's
  single write lock before reading the current items, evaluates every
  condition with `conditions.evaluate`, and commits all operations or none.
  Several broker processes may share one file; a locked database is waited
  for (``busy_timeout``) and retried until ``lock_wait_s`` has passed, after
  which the caller gets `Unavailable`.
* Reads are strongly consistent: each starts a fresh snapshot, which includes
  every transaction committed before it.
* The connection lives on one dedicated thread; the event loop only awaits.
* Values are validated as the DynamoDB adapter and DynamoDB itself would
  (no floats, bytes or tuples, integers within -2**63..2**63, 32 levels of
  nesting, 400 KB items, non-empty keys and map keys), so code that works
  here does not fail on the other backend.  JSON keeps ``True`` and ``1``
  distinct.
* Capacity units are estimated from the request alone — the new item for a
  Put, the key for a Delete or Check — exactly as the DynamoDB adapter can
  without asking for consumed capacity; failed conditional writes are
  charged, as DynamoDB charges them.  Request counts use DynamoDB API names.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..conditions import Check, Condition, Delete, Put, WriteOp, evaluate, op_key, validate_ops
from ..cost import StoreStats, item_size, read_units, write_units
from ..errors import Conflict, CorruptData, Internal, InvalidRequest, NotFound, Unavailable
from ..model import Item

T = TypeVar("T")

RESERVED_ATTRS = ("pk", "sk")
MAX_ITEM_BYTES = 400 * 1024
MAX_PK_BYTES = 2048
MAX_SK_BYTES = 1024
INT_MIN, INT_MAX = -(2**63), 2**63  # the range both backends accept
MAX_DEPTH = 32
BATCH_WRITE_MAX = 25  # items per BatchWriteItem, for request accounting
QUERY_PAGE_BYTES = 1024 * 1024  # bytes per Query response page, likewise
_MAX_CODE_POINT = 0x10FFFF

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    attrs TEXT NOT NULL,  -- JSON object
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID
"""


# --- validation (pure) ---------------------------------------------------------
def _check_key(name: str, value: Any, max_bytes: int) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} must be a non-empty string", **{name: repr(value)})
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{name} is not valid unicode", **{name: repr(value)}) from exc
    if size > max_bytes:
        raise InvalidRequest(f"{name} is too long", bytes=size, max=max_bytes)


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest("string is not valid unicode", at=where) from exc


def check_value(value: Any, where: str = "value", depth: int = 0) -> None:
    """Reject what DynamoDB cannot store, or what would not survive a JSON round-trip."""
    if depth > MAX_DEPTH:
        raise InvalidRequest("attribute nesting is too deep", at=where, max=MAX_DEPTH)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidRequest("integer outside the range -2**63..2**63", at=where)
        return
    if isinstance(value, str):
        _check_text(value, where)
        return
    if isinstance(value, list):
        for i, element in enumerate(value):
            check_value(element, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for name, element in value.items():
            if not isinstance(name, str) or not name:
                raise InvalidRequest("map keys must be non-empty strings", at=where, key=repr(name))
            _check_text(name, where)
            check_value(element, f"{where}.{name}", depth + 1)
        return
    raise InvalidRequest("unsupported attribute type", at=where, type=type(value).__name__)


def check_item(item: Item) -> None:
    if not isinstance(item, Item):
        raise InvalidRequest("expected an Item", type=type(item).__name__)
    _check_key("pk", item.pk, MAX_PK_BYTES)
    _check_key("sk", item.sk, MAX_SK_BYTES)
    if not isinstance(item.attrs, dict):
        raise InvalidRequest("item attributes must be a dict", pk=item.pk, sk=item.sk)
    for name, value in item.attrs.items():
        if not isinstance(name, str) or not name:
            raise InvalidRequest("attribute names must be non-empty strings", pk=item.pk, sk=item.sk)
        if name in RESERVED_ATTRS:
            raise InvalidRequest("attribute name is reserved for the key", attr=name, pk=item.pk, sk=item.sk)
        _check_text(name, "attribute name")
        check_value(value, name, 1)
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise InvalidRequest("item is too large", bytes=size, max=MAX_ITEM_BYTES, pk=item.pk, sk=item.sk)


def check_condition(condition: Condition | None) -> None:
    if condition is None:
        return
    if not isinstance(condition, Condition):
        raise InvalidRequest("expected a Condition", type=type(condition).__name__)
    # A comparison naming "pk" or "sk" is allowed and, as in `evaluate`, never
    # holds: the key is not among an item's attributes.
    for compare in condition.compares:
        if not isinstance(compare.attr, str) or not compare.attr:
            raise InvalidRequest("condition attribute names must be non-empty strings", attr=repr(compare.attr))
        check_value(compare.value, compare.attr, 1)
        if compare.op not in ("=", "<>") and not isinstance(compare.value, (int, str, type(None))):
            raise InvalidRequest("ordering comparisons need an int, str or bool value", attr=compare.attr, op=compare.op)


def check_ops(ops: Sequence[WriteOp]) -> None:
    for op in ops:
        if not isinstance(op, (Put, Delete, Check)):
            raise InvalidRequest("unknown write operation", type=type(op).__name__)
    try:
        validate_ops(ops)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    for op in ops:
        if isinstance(op, Put):
            check_item(op.item)
        else:
            _check_key("pk", op.pk, MAX_PK_BYTES)
            _check_key("sk", op.sk, MAX_SK_BYTES)
        check_condition(op.condition)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no bound)."""
    chars = list(prefix.rstrip(chr(_MAX_CODE_POINT)))
    if not chars:
        return None
    nxt = ord(chars[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; skip over them
        nxt = 0xE000
    chars[-1] = chr(nxt)
    return "".join(chars)


def write_cost(ops: Sequence[WriteOp]) -> tuple[str, float]:
    """DynamoDB request name and write units for ``ops`` (see the module docstring)."""
    transactional = len(ops) > 1 or isinstance(ops[0], Check)
    units = 0.0
    for op in ops:
        size = item_size(op.item) if isinstance(op, Put) else item_size(Item(op.pk, op.sk))
        units += write_units(size, transactional=transactional)
    if transactional:
        return "TransactWriteItems", units
    return ("PutItem" if isinstance(ops[0], Put) else "DeleteItem"), units


def _encode(attrs: dict[str, Any]) -> str:
    return json.dumps(attrs, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _decode(pk: str, sk: str, attrs: str) -> Item:
    try:
        decoded = json.loads(attrs)
    except ValueError as exc:
        raise CorruptData("stored item is not valid json", pk=pk, sk=sk) from exc
    if not isinstance(decoded, dict):
        raise CorruptData("stored item attributes are not a json object", pk=pk, sk=sk)
    return Item(pk, sk, decoded)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _rollback(db: sqlite3.Connection | None) -> None:
    """Best effort: a failed rollback leaves nothing applied, as SQLite never half-commits."""
    if db is not None and db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class _Missing(Exception):
    """Raised inside the worker when the database or table does not exist."""


class SqliteMetaStore:
    """`MetaStore` on one SQLite file; see the module docstring for guarantees."""

    def __init__(self, path: Path, *, busy_timeout_s: float, lock_wait_s: float) -> None:
        self.path = path
        self.stats = StoreStats()
        self._busy_timeout_s = busy_timeout_s
        self._lock_wait_s = lock_wait_s
        # One thread owns the connection: sqlite3 objects are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidelog-sqlite")
        self._db: sqlite3.Connection | None = None  # touched only on the executor thread
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | Path, *, busy_timeout_s: float = 5.0, lock_wait_s: float = 30.0
    ) -> "SqliteMetaStore":
        """Cheap: the file is opened (never created) on first use; `ensure` creates it."""
        return cls(Path(path).absolute(), busy_timeout_s=busy_timeout_s, lock_wait_s=lock_wait_s)

    async def __aenter__(self) -> "SqliteMetaStore":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        await asyncio.to_thread(self._executor.shutdown, True)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise Internal("metadata store used after close", path=self.path)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._guarded, fn, *args))

    # --- connection (executor thread only) ------------------------------------
    def _missing(self) -> NotFound:
        return NotFound("metadata database or table is missing; run `tidelog init` to create it", path=self.path)

    def _connect(self, create: bool) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = self.path.as_uri() + ("?mode=rwc" if create else "?mode=rw")
        try:
            db = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout_s, isolation_level=None)
        except sqlite3.OperationalError as exc:
            if not create and not self.path.exists():
                raise _Missing() from exc
            raise
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise Unavailable("sqlite refused wal mode", path=self.path, mode=mode)
            db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _guarded(self, fn: Callable[..., T], *args: Any, create: bool = False) -> T:
        """Run ``fn(db, *args)``, retrying while another connection holds the lock."""
        deadline = time.monotonic() + self._lock_wait_s
        delay = 0.001
        while True:
            try:
                return fn(self._connect(create), *args)
            except _Missing as exc:
                raise self._missing() from exc
            except sqlite3.Error as exc:
                _rollback(self._db)
                if isinstance(exc, sqlite3.OperationalError):
                    if "no such table" in str(exc):
                        raise self._missing() from exc
                    if _is_locked(exc):
                        if time.monotonic() < deadline:
                            time.sleep(delay * (0.5 + random.random()))
                            delay = min(delay * 2, 0.1)
                            continue
                        raise Unavailable(
                            "metadata database stayed locked", path=self.path, waited_s=self._lock_wait_s
                        ) from exc
                if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                    raise CorruptData("metadata database is corrupt", path=self.path, error=str(exc)) from exc
                raise Unavailable("sqlite error", path=self.path, error=str(exc)) from exc
            except OSError as exc:
                raise Unavailable("cannot open metadata database", path=self.path, error=str(exc)) from exc

    # --- ensure ------------------------------------------------------------
    async def ensure(self, create: bool) -> None:
        if self._closed:
            raise Internal("metadata store used after close", path=self.path)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, functools.partial(self._guarded, self._ensure_sync, create, create=create)
        )

    @staticmethod
    def _ensure_sync(db: sqlite3.Connection, create: bool) -> None:
        if create:
            db.execute(_SCHEMA)
        elif db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone() is None:
            raise _Missing()

    # --- reads -------------------------------------------------------------
    async def get(self, pk: str, sk: str) -> Item | None:
        _check_key("pk", pk, MAX_PK_BYTES)
        _check_key("sk", sk, MAX_SK_BYTES)
        self.stats.count("GetItem")
        item = await self._run(self._get_sync, pk, sk)
        self.stats.read_units += read_units(item_size(item) if item is not None else 0)
        return item

    @staticmethod
    def _get_sync(db: sqlite3.Connection, pk: str, sk: str) -> Item | None:
        row = db.execute("SELECT attrs FROM items WHERE pk = ? AND sk = ?", (pk, sk)).fetchone()
        return None if row is None else _decode(pk, sk, row[0])

    async def query(
        self,
        pk: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[Item]:
        _check_key("pk", pk, MAX_PK_BYTES)
        for name, bound in (("prefix", prefix), ("after", after), ("before", before)):
            if bound is not None:
                if not isinstance(bound, str):
                    raise InvalidRequest(f"query {name} must be a string", **{name: repr(bound)})
                _check_text(bound, name)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidRequest("query limit must be a positive integer", limit=repr(limit))
        clauses = ["pk = ?"]
        params: list[Any] = [pk]
        if after is not None:
            clauses.append("sk > ?")
            params.append(after)
        if before is not None:
            clauses.append("sk < ?")
            params.append(before)
        if prefix:
            clauses.append("sk >= ?")
            params.append(prefix)
            upper = prefix_upper_bound(prefix)
            if upper is not None:
                clauses.append("sk < ?")
                params.append(upper)
        sql = f"SELECT sk, attrs FROM items WHERE {' AND '.join(clauses)} ORDER BY sk {'DESC' if reverse else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        items = await self._run(self._query_sync, pk, sql, params)
        size = sum(item_size(i) for i in items)
        self.stats.count("Query", max(1, math.ceil(size / QUERY_PAGE_BYTES)))
        self.stats.read_units += read_units(size)
        return items

    @staticmethod
    def _query_sync(db: sqlite3.Connection, pk: str, sql: str, params: list[Any]) -> list[Item]:
        return [_decode(pk, sk, attrs) for sk, attrs in db.execute(sql, params).fetchall()]

    # --- writes ------------------------------------------------------------
    async def write(self, ops: Sequence[WriteOp]) -> None:
        ops = list(ops)
        check_ops(ops)
        name, units = write_cost(ops)
        self.stats.count(name)
        self.stats.write_units += units
        await self._run(self._write_sync, ops)

    @staticmethod
    def _write_sync(db: sqlite3.Connection, ops: list[WriteOp]) -> None:
        # IMMEDIATE takes the write lock before we read: the reads and the
        # writes below form one atomic step for every process on this file.
        db.execute("BEGIN IMMEDIATE")
        try:
            for index, op in enumerate(ops):
                pk, sk = op_key(op)
                row = db.execute("SELECT attrs FROM items WHERE pk = ? AND sk = ?", (pk, sk)).fetchone()
                current = None if row is None else _decode(pk, sk, row[0])
                if not evaluate(op.condition, current):
                    raise Conflict("condition failed", current=current, index=index, pk=pk, sk=sk)
            for op in ops:
                if isinstance(op, Put):
                    db.execute(
                        "INSERT OR REPLACE INTO items (pk, sk, attrs) VALUES (?, ?, ?)",
                        (op.item.pk, op.item.sk, _encode(op.item.attrs)),
                    )
                elif isinstance(op, Delete):
                    db.execute("DELETE FROM items WHERE pk = ? AND sk = ?", (op.pk, op.sk))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    async def put_many(self, items: Sequence[Item]) -> None:
        for item in items:
            check_item(item)
        # The last write of a key wins, as it would one by one (and as the DynamoDB
        # adapter must arrange, since one BatchWriteItem may not name a key twice).
        items = list({(i.pk, i.sk): i for i in items}.values())
        if not items:
            return
        self.stats.count("BatchWriteItem", math.ceil(len(items) / BATCH_WRITE_MAX))
        self.stats.write_units += sum(write_units(item_size(i)) for i in items)
        rows = [(i.pk, i.sk, _encode(i.attrs)) for i in items]
        await self._run(self._put_many_sync, rows)

    @staticmethod
    def _put_many_sync(db: sqlite3.Connection, rows: list[tuple[str, str, str]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO items (pk, sk, attrs) VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
