"""Conditional writes as plain data, so every metadata backend enforces the same rules.

A `Condition` is a conjunction: an optional item-existence requirement plus
attribute comparisons.  The DynamoDB adapter translates it to a
ConditionExpression; the SQLite adapter evaluates it with `evaluate` inside
its write transaction.  Comparisons against a missing attribute are false,
whatever the operator, on both backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

from .model import Item

OPERATORS = ("=", "<>", "<", "<=", ">", ">=")


@dataclass(frozen=True, slots=True)
class Compare:
    attr: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator op={self.op!r}")


@dataclass(frozen=True, slots=True)
class Condition:
    """``exists`` is True (item must exist), False (must be absent) or None (either)."""

    exists: bool | None = None
    compares: tuple[Compare, ...] = ()

    def and_(self, attr: str, op: str, value: Any) -> "Condition":
        return Condition(True if self.exists is None else self.exists, self.compares + (Compare(attr, op, value),))


ABSENT = Condition(exists=False)
EXISTS = Condition(exists=True)


def where(**equals: Any) -> Condition:
    """The item exists and each named attribute equals the given value."""
    return Condition(True, tuple(Compare(k, "=", v) for k, v in equals.items()))


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return type(a) is type(b)


def _compare(current: Any, op: str, value: Any) -> bool:
    if current is None:
        return False
    if not _same_kind(current, value):
        return op == "<>"
    if op == "=":
        return current == value
    if op == "<>":
        return current != value
    if op == "<":
        return current < value
    if op == "<=":
        return current <= value
    if op == ">":
        return current > value
    return current >= value


def evaluate(condition: Condition | None, item: Item | None) -> bool:
    """True when ``item`` (None = absent) satisfies ``condition`` (None = always)."""
    if condition is None:
        return True
    if condition.exists is False:
        return item is None
    if condition.exists is True and item is None:
        return False
    if item is None:
        return not condition.compares
    return all(_compare(item.attrs.get(c.attr), c.op, c.value) for c in condition.compares)


@dataclass(frozen=True, slots=True)
class Put:
    """Replace the whole item (create it if absent) when ``condition`` holds."""

    item: Item
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    pk: str
    sk: str
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """Write nothing; make the whole write fail unless ``condition`` holds."""

    pk: str
    sk: str
    condition: Condition


WriteOp = Union[Put, Delete, Check]

MAX_WRITE_OPS = 100  # DynamoDB TransactWriteItems limit; both backends enforce it.


def op_key(op: WriteOp) -> tuple[str, str]:
    if isinstance(op, Put):
        return op.item.pk, op.item.sk
    return op.pk, op.sk


def validate_ops(ops: Sequence[WriteOp]) -> None:
    """Reject what DynamoDB would reject, identically on every backend."""
    if not ops:
        raise ValueError("a write needs at least one operation")
    if len(ops) > MAX_WRITE_OPS:
        raise ValueError(f"too many operations in one write count={len(ops)} max={MAX_WRITE_OPS}")
    keys = [op_key(op) for op in ops]
    if len(set(keys)) != len(keys):
        raise ValueError("one write may touch each item only once")
