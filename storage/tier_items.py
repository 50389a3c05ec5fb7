"""Metadata items of tiered partitions, as plain values (pure: no I/O).

All live under the partition's key ``part#<topic id>#<p>``, next to its
checkpoints:

``tier#<end>`` — one per tier segment, keyed by the exclusive end of the
    offset range ``[start, end)`` it covers.  Ranges of a partition's tier
    items never overlap and, from the first to the last, leave no gap
    except below the log start.  After compaction a segment may hold fewer
    records than its range (offset gaps, as in Kafka) or none at all
    (``object`` is None); the range still says which item answers for an
    offset, so at every instant an offset resolves to exactly one place.
    ``gen`` changes on every rewrite and is what rewrites are conditioned on.

``tierhead`` — the exclusive end of the tiered range and a version, bumped
    by every tiering swap: two tierers racing over one partition cannot
    both extend it.  ``pending_since`` remembers when tiering first saw too
    little data for a full segment, so a quiet partition is still tiered
    after ``max_wait_ms`` instead of never.

``logstart`` — a log-start floor that retention may raise without the
    partition lease (bumping the lease's version would fence its leader).
    The effective log start is ``max(lease.log_start_offset, floor)``.

``compaction`` — how far the tiered log has been compacted (Kafka's cleaner
    checkpoint) and a version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import keys
from .errors import CorruptData
from .model import Item, SegmentRef
from .tier_codec import Chunk


@dataclass(frozen=True, slots=True)
class TierSegment:
    topic_id: str
    partition: int
    start: int
    end: int
    object_key: str | None
    size: int
    max_timestamp: int
    record_count: int
    tombstones: int
    raw_bytes: int
    codec: str
    chunks: tuple[Chunk, ...] = ()
    gen: int = 0
    created_ms: int = 0
    cleaned_ms: int | None = None
    #: A random token of the write that made this version: content-addressed
    #: keys make racing writers' items look alike, and a writer settling an
    #: ambiguous reply must know whether the item it finds is its own.
    writer: str = ""

    @property
    def sk(self) -> str:
        return keys.tier_sk(self.end)

    @property
    def empty(self) -> bool:
        return self.object_key is None

    def to_item(self) -> Item:
        return Item(keys.partition_pk(self.topic_id, self.partition), self.sk, {
            "start": self.start, "end": self.end, "object": self.object_key, "size": self.size,
            "max_ts": self.max_timestamp, "records": self.record_count, "tombstones": self.tombstones,
            "raw_bytes": self.raw_bytes, "codec": self.codec, "chunks": [c.to_json() for c in self.chunks],
            "gen": self.gen, "created_ms": self.created_ms, "cleaned_ms": self.cleaned_ms, "writer": self.writer,
        })

    @classmethod
    def from_item(cls, item: Item) -> "TierSegment":
        a = item.attrs
        try:
            _, topic_id, partition = item.pk.rsplit("#", 2)
            seg = cls(
                topic_id=topic_id, partition=int(partition), start=int(a["start"]), end=int(a["end"]),
                object_key=a.get("object"), size=int(a["size"]), max_timestamp=int(a["max_ts"]),
                record_count=int(a["records"]), tombstones=int(a.get("tombstones", 0)),
                raw_bytes=int(a.get("raw_bytes", 0)), codec=str(a["codec"]),
                chunks=tuple(Chunk.from_json(c) for c in a.get("chunks") or ()), gen=int(a.get("gen", 0)),
                created_ms=int(a.get("created_ms", 0)),
                cleaned_ms=None if a.get("cleaned_ms") is None else int(a["cleaned_ms"]),
                writer=str(a.get("writer", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptData("tier item is malformed", pk=item.pk, sk=item.sk) from exc
        if seg.sk != item.sk or not 0 <= seg.start < seg.end or (seg.object_key is None) != (not seg.chunks):
            raise CorruptData("tier item is inconsistent", pk=item.pk, sk=item.sk)
        return seg

    def refs(self, offset: int = 0) -> list[SegmentRef]:
        """One ref per chunk, oldest first, skipping chunks wholly below ``offset``.

        Chunk ranges tile the segment's range: the first starts at ``start``
        and each ends where the next begins, so compaction gaps belong to a
        chunk and a lookup never falls between two.
        """
        out = []
        for i, chunk in enumerate(self.chunks):
            first = self.start if i == 0 else chunk.first_offset
            last = (self.chunks[i + 1].first_offset if i + 1 < len(self.chunks) else self.end) - 1
            if last >= offset and self.object_key is not None:
                out.append(SegmentRef(self.object_key, chunk.position, chunk.length, first, last,
                                      chunk.max_timestamp, "tier"))
        return out

    def rewritten(self, **changes: Any) -> "TierSegment":
        return replace(self, gen=self.gen + 1, **changes)


@dataclass(frozen=True, slots=True)
class TierHead:
    topic_id: str
    partition: int
    end: int = 0
    version: int = 0
    pending_since: int | None = None
    exists: bool = field(default=False, compare=False)

    def to_item(self) -> Item:
        return Item(keys.partition_pk(self.topic_id, self.partition), keys.TIER_HEAD_SK,
                    {"end": self.end, "version": self.version, "pending_since": self.pending_since})

    @classmethod
    def from_item(cls, topic_id: str, partition: int, item: Item | None) -> "TierHead":
        if item is None:
            return cls(topic_id, partition)
        a = item.attrs
        pending = a.get("pending_since")
        return cls(topic_id, partition, int(a["end"]), int(a["version"]), None if pending is None else int(pending),
                   exists=True)

    def advanced(self, end: int, pending_since: int | None) -> "TierHead":
        return TierHead(self.topic_id, self.partition, end, self.version + 1, pending_since, exists=True)


@dataclass(frozen=True, slots=True)
class CompactionState:
    topic_id: str
    partition: int
    cleaned_to: int = 0
    version: int = 0
    exists: bool = field(default=False, compare=False)

    def to_item(self) -> Item:
        return Item(keys.partition_pk(self.topic_id, self.partition), keys.COMPACTION_SK,
                    {"cleaned_to": self.cleaned_to, "version": self.version})

    @classmethod
    def from_item(cls, topic_id: str, partition: int, item: Item | None) -> "CompactionState":
        if item is None:
            return cls(topic_id, partition)
        return cls(topic_id, partition, int(item.attrs["cleaned_to"]), int(item.attrs["version"]), exists=True)


def checkpoint_end(item: Item) -> int:
    return int(item.attrs["end"])


def checkpoint_start(item: Item) -> int:
    return int(item.attrs.get("start", item.attrs["end"]))
