"""Domain types shared by the storage services, the broker and the Lambdas.

All are frozen: state changes produce new values, which keeps the
compare-and-set code honest about what it read and what it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """One metadata-store item: a partition key, a sort key and plain attributes.

    Attribute values are JSON-shaped: ``str``, ``int``, ``bool``, ``None``,
    ``list`` and ``dict`` (no floats; encode bytes as base64 text).
    """

    pk: str
    sk: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified_ms: int


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """Where one partition's batches for an offset range live.

    ``position``/``length`` is the absolute byte range inside ``object_key``
    holding whole Avro blocks (ingest) or the whole object (tier segment).
    """

    object_key: str
    position: int
    length: int
    first_offset: int
    last_offset: int
    max_timestamp: int
    kind: str = "ingest"  # "ingest" (batch-level Avro) or "tier" (record-level Avro)
