"""Kafka's delete-retention rule for one partition (pure: no I/O, no clock).

The one implementation of the rule: the leader applies it to its commit
spans (`broker.logs`), and retention outside the leader to tier segments and
checkpoint ranges (`storage.retention`).

Kafka deletes whole segments from the head of a log while the oldest one is
past ``retention.ms`` (its largest timestamp is older than now minus the
retention) or while removing it still leaves at least ``retention.bytes``.
Tidelog has no local segments; the unit of deletion is a *span*: one
partition's byte range in one ingest object (a `SegmentRef`), which is as
fine-grained as the storage allows without reading batches.

Deleting means advancing the partition's log start offset; the bytes stay in
their shared ingest objects until tiering/GC rewrites them.  A scan therefore
never needs to look past the first span it keeps, which makes the usual pass
(nothing expired) cost one lookup.

Rules, as in Kafka:

* spans are considered oldest first and the scan stops at the first span
  that is kept, even if a later span would qualify (timestamps are not
  monotonic across producers);
* a negative ``retention.ms`` / ``retention.bytes`` disables that limit;
* a span whose max timestamp is unknown (negative) is never deleted by time,
  because its age is unknown -- tidelog never deletes data early;
* the new log start is the first offset after the last deleted span, never
  beyond the high watermark.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A contiguous run of one partition's batches: offsets, newest timestamp and stored size."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    size: int


class RetentionScan:
    """Feed spans oldest first with `offer` until it returns False; then read `log_start`.

    ``log_bytes`` is the stored size of the whole retained log (needed only for
    ``retention.bytes``; pass None when that limit is off).
    """

    def __init__(self, *, log_start: int, high_watermark: int, now_ms: int, retention_ms: int,
                 retention_bytes: int, log_bytes: int | None) -> None:
        if retention_bytes >= 0 and log_bytes is None:
            raise ValueError("retention.bytes needs the log's size")
        self._start = log_start
        self._hwm = high_watermark
        self._oldest_kept_ms = now_ms - retention_ms if retention_ms >= 0 else None
        self._excess = log_bytes - retention_bytes if retention_bytes >= 0 and log_bytes is not None else None
        self.deleted_bytes = 0
        self._done = False

    @property
    def wanted(self) -> bool:
        """False when neither limit is on: no scan is needed at all."""
        return self._oldest_kept_ms is not None or self._excess is not None

    @property
    def log_start(self) -> int:
        """The log start offset after every span deleted so far."""
        return self._start

    def offer(self, span: Span) -> bool:
        """Consider the next-oldest span; True means "give me the next one"."""
        if self._done:
            return False
        if span.last_offset < self._start:
            return True  # already below the log start (deleted before)
        if span.last_offset >= self._hwm or not self._deletable(span):
            self._done = True
            return False
        self._start = span.last_offset + 1
        self.deleted_bytes += span.size
        if self._excess is not None:
            self._excess -= span.size
        return True

    def _deletable(self, span: Span) -> bool:
        if self._excess is not None and self._excess - span.size >= 0:
            return True
        if self._oldest_kept_ms is not None and 0 <= span.max_timestamp < self._oldest_kept_ms:
            return True
        return False

