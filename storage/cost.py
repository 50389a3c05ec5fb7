"""DynamoDB capacity-unit arithmetic, shared by every metadata backend.

Both backends count units with these rules so a benchmark on the embedded
store predicts the DynamoDB bill.  Item size follows DynamoDB's rule of
thumb: attribute-name bytes plus value bytes (numbers ~ digits/2 + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .model import Item


def value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return len(str(abs(value))) // 2 + 2
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, list):
        return 3 + sum(value_size(v) + 1 for v in value)
    if isinstance(value, dict):
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in value.items())
    raise TypeError(f"unsupported attribute type type={type(value).__name__}")


def item_size(item: Item) -> int:
    size = len("pk") + len(item.pk.encode()) + len("sk") + len(item.sk.encode())
    return size + sum(len(k.encode()) + value_size(v) for k, v in item.attrs.items())


def write_units(size: int, transactional: bool = False) -> int:
    units = max(1, math.ceil(size / 1024))
    return units * 2 if transactional else units


def read_units(size: int, consistent: bool = True, transactional: bool = False) -> float:
    units = max(1, math.ceil(size / 4096))
    if transactional:
        return units * 2
    return units if consistent else units / 2


@dataclass
class StoreStats:
    """Counters every adapter keeps: request counts by operation and capacity units."""

    requests: dict[str, int] = field(default_factory=dict)
    write_units: float = 0
    read_units: float = 0

    def count(self, op: str, n: int = 1) -> None:
        self.requests[op] = self.requests.get(op, 0) + n

    def snapshot(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "write_units": self.write_units, "read_units": self.read_units}
