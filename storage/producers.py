"""Idempotent-producer sequence rules for one partition (pure).

Kafka's contract: per (producer id, partition) the broker accepts batch
sequences in order, answers a retried batch that is among the last five with
its *original* offsets, and rejects gaps and stale epochs.  Entries are
"pending" from buffer time until their flush commits; a failed flush rolls
back every pending entry so producers retry from a consistent state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

WINDOW = 5
NO_PRODUCER = -1
INT32_MAX = 2**31 - 1

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


@dataclass(slots=True)
class BatchSeq:
    first_seq: int
    last_seq: int
    base_offset: int | None  # None while pending
    last_offset: int | None


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque  # of BatchSeq, newest last
    last_timestamp: int = -1


@dataclass(frozen=True, slots=True)
class Verdict:
    """``action`` is "append", "duplicate" (see ``batch``) or "reject" (see ``error_code``)."""

    action: str
    batch: BatchSeq | None = None
    error_code: int = 0


APPEND = Verdict("append")


def next_seq(seq: int) -> int:
    return 0 if seq == INT32_MAX else seq + 1


def last_seq_of(first_seq: int, record_count: int) -> int:
    return (first_seq + record_count - 1) % (INT32_MAX + 1)


class ProducerStates:
    def __init__(self) -> None:
        self._entries: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, producer_id: int, epoch: int, first_seq: int, last_seq: int) -> Verdict:
        if producer_id == NO_PRODUCER:
            return APPEND
        entry = self._entries.get(producer_id)
        if entry is None:
            # Unknown producers are accepted at any sequence: their state may
            # have aged out, and librdkafka recovers from errors by bumping epochs.
            return APPEND
        if epoch < entry.epoch:
            return Verdict("reject", error_code=INVALID_PRODUCER_EPOCH)
        if epoch > entry.epoch:
            return APPEND if first_seq == 0 else Verdict("reject", error_code=OUT_OF_ORDER_SEQUENCE_NUMBER)
        for batch in entry.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return Verdict("duplicate", batch=batch)
        if not entry.batches or first_seq == next_seq(entry.batches[-1].last_seq):
            return APPEND
        return Verdict("reject", error_code=OUT_OF_ORDER_SEQUENCE_NUMBER)

    def append(self, producer_id: int, epoch: int, first_seq: int, last_seq: int,
               base_offset: int | None = None, last_offset: int | None = None, timestamp: int = -1) -> BatchSeq:
        entry = self._entries.get(producer_id)
        if entry is None or epoch != entry.epoch:
            entry = ProducerEntry(epoch, deque(maxlen=WINDOW))
            self._entries[producer_id] = entry
        batch = BatchSeq(first_seq, last_seq, base_offset, last_offset)
        entry.batches.append(batch)
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        return batch

    def rollback_pending(self) -> None:
        for pid in list(self._entries):
            entry = self._entries[pid]
            kept = [b for b in entry.batches if b.base_offset is not None]
            if kept:
                entry.batches = deque(kept, maxlen=WINDOW)
            else:
                del self._entries[pid]

    def expire(self, older_than_ms: int) -> None:
        for pid in [p for p, e in self._entries.items() if 0 <= e.last_timestamp < older_than_ms]:
            del self._entries[pid]

    def to_json(self) -> dict[str, Any]:
        """Committed state only, compact: {pid: [epoch, last_ts, [[first, last, base, last_off], ...]]}."""
        out: dict[str, Any] = {}
        for pid, entry in self._entries.items():
            done = [[b.first_seq, b.last_seq, b.base_offset, b.last_offset] for b in entry.batches if b.base_offset is not None]
            if done:
                out[str(pid)] = [entry.epoch, entry.last_timestamp, done]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "ProducerStates":
        states = cls()
        for pid, (epoch, last_ts, batches) in (data or {}).items():
            entry = ProducerEntry(int(epoch), deque(maxlen=WINDOW), int(last_ts))
            for first, last, base, last_off in batches:
                entry.batches.append(BatchSeq(first, last, base, last_off))
            states._entries[int(pid)] = entry
        return states
