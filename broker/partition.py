"""In-memory state of one partition this broker leads.

Invariants:
* ``high_watermark`` is the end of the committed log: every offset below it
  is in a committed ingest object (or older storage).  Nothing at or above
  it is ever served.
* Offsets are assigned at flush time, from ``high_watermark``, because the
  owner is the only writer and flushes are sequential.
* ``tail`` caches recent committed batches so tailing consumers never touch
  the object store; ``refs`` lists where batches committed since the last
  checkpoint live, for reads that miss the tail.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from tidelog.storage.catalog import Topic
from tidelog.storage.model import SegmentRef
from tidelog.storage.partition_log import CheckpointInput, PartitionLease
from tidelog.storage.producers import BatchSeq, ProducerStates
from tidelog.storage.records import BatchHeader
from tidelog.storage.segments import BatchEntry


@dataclass(slots=True)
class PendingBatch:
    """A validated batch waiting for the next flush: ``data[pos:pos + header.size]``
    of the producer's request, kept as received until offsets are assigned."""

    data: bytes
    pos: int
    header: BatchHeader
    future: asyncio.Future
    seq_entry: BatchSeq | None


@dataclass(slots=True)
class PartitionState:
    topic: Topic
    lease: PartitionLease
    high_watermark: int
    max_timestamp: int
    producers: ProducerStates
    tail_budget: int
    checkpoint_start: int = 0
    pending: list[PendingBatch] = field(default_factory=list)
    pending_bytes: int = 0
    tail: deque = field(default_factory=deque)  # of BatchEntry, oldest first
    tail_bytes: int = 0
    refs: list[SegmentRef] = field(default_factory=list)
    dirty: bool = False
    releasing: bool = False
    pending_futures: dict = field(default_factory=dict)  # (producer_id, first_seq) -> future
    log_bytes: int | None = None

    @property
    def partition(self) -> int:
        return self.lease.partition

    @property
    def log_start_offset(self) -> int:
        return self.lease.log_start_offset

    def add_committed(self, entries: list[BatchEntry], ref: SegmentRef) -> None:
        for entry in entries:
            self.tail.append(entry)
            self.tail_bytes += len(entry.batch)
        while self.tail and self.tail_bytes > self.tail_budget and len(self.tail) > 1:
            self.tail_bytes -= len(self.tail.popleft().batch)
        self.refs.append(ref)
        if self.log_bytes is not None:
            self.log_bytes += ref.length
        self.high_watermark = ref.last_offset + 1
        self.max_timestamp = max(self.max_timestamp, ref.max_timestamp)
        self.dirty = True

    def tail_from(self, offset: int) -> list[BatchEntry] | None:
        """Cached batches from the one holding ``offset``, or None if the cache starts later."""
        if not self.tail or self.tail[0].base_offset > offset:
            return None
        out = []
        for entry in self.tail:
            if entry.last_offset >= offset:
                out.append(entry)
        return out

    def snapshot(self) -> CheckpointInput:
        return CheckpointInput(self.lease, self.checkpoint_start, self.high_watermark, self.max_timestamp,
                               list(self.refs), self.producers)

    def checkpointed(self, snapshot: CheckpointInput) -> None:
        done = len(snapshot.refs)
        self.refs = self.refs[done:]
        self.checkpoint_start = snapshot.end_offset
        self.dirty = bool(self.refs)
