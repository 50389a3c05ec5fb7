"""Checkpoint index objects: one small Avro file per checkpoint round listing
where every partition's recent batches live.

Keeping the per-flush byte ranges in the object store (one PUT per round)
instead of in per-partition metadata items is what keeps checkpoints at one
~300-byte item per partition whatever the flush rate.
"""

from __future__ import annotations

import io
from typing import Iterable

import fastavro

from .errors import CorruptData
from .model import SegmentRef

SCHEMA = fastavro.parse_schema({
    "type": "record",
    "name": "IndexEntry",
    "namespace": "io.tidelog",
    "doc": "Where one partition's batches for an offset range live inside an ingest segment object.",
    "fields": [
        {"name": "topic_id", "type": "string", "doc": "Topic UUID (partitions key on it)."},
        {"name": "partition", "type": "int"},
        {"name": "object_key", "type": "string", "doc": "Ingest segment object holding the batches."},
        {"name": "position", "type": "long", "doc": "Absolute byte offset of the partition's Avro blocks."},
        {"name": "length", "type": "long", "doc": "Byte length of those blocks."},
        {"name": "first_offset", "type": "long"},
        {"name": "last_offset", "type": "long"},
        {"name": "max_timestamp", "type": "long"},
    ],
})


def encode_index(entries: Iterable[tuple[str, int, SegmentRef]]) -> bytes:
    out = io.BytesIO()
    records = (
        {"topic_id": tid, "partition": p, "object_key": r.object_key, "position": r.position,
         "length": r.length, "first_offset": r.first_offset, "last_offset": r.last_offset,
         "max_timestamp": r.max_timestamp}
        for tid, p, r in entries
    )
    fastavro.writer(out, SCHEMA, records, codec="deflate", metadata={"tidelog.format": "index-v1"})
    return out.getvalue()


def decode_index(data: bytes) -> dict[tuple[str, int], list[SegmentRef]]:
    try:
        found: dict[tuple[str, int], list[SegmentRef]] = {}
        for r in fastavro.reader(io.BytesIO(data)):
            found.setdefault((r["topic_id"], r["partition"]), []).append(SegmentRef(
                r["object_key"], r["position"], r["length"], r["first_offset"], r["last_offset"], r["max_timestamp"]))
        return found
    except Exception as exc:  # fastavro raises many types on garbage
        raise CorruptData("index object is not readable") from exc
