"""Pure arithmetic behind `tidelog group describe` and `tidelog group reset-offsets`.

Offsets follow Kafka's meaning: a committed offset is the *next* record the
group will read, the log end offset is one past the last record, so lag is
``end - committed`` and a fully caught-up group has lag 0.  Negative offsets
are the client's sentinels ("no commit"), never positions.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("earliest", "latest", "offset", "datetime")


def lag(committed: int | None, end: int | None) -> int | None:
    """Records the group has yet to read; None when either side is unknown."""
    if committed is None or end is None or committed < 0 or end < 0:
        return None
    return max(0, end - committed)


@dataclass(frozen=True, slots=True)
class Reset:
    partition: int
    current: int | None
    new: int
    note: str = ""


def plan_reset(strategy: str, *, partition: int, earliest: int, latest: int, current: int | None,
               offset: int | None = None, at_time: int | None = None) -> Reset:
    """Where one partition's committed offset should move.

    ``offset`` is the requested offset for ``strategy="offset"``; ``at_time`` is
    the offset the broker found for a timestamp (-1 when no record is that
    recent) for ``strategy="datetime"``.  Targets outside the log are clamped
    to it, as kafka-consumer-groups does, and the clamp is noted.
    """
    if strategy == "earliest":
        return Reset(partition, current, earliest)
    if strategy == "latest":
        return Reset(partition, current, latest)
    if strategy == "datetime":
        if at_time is None or at_time < 0:
            return Reset(partition, current, latest, "no record that recent: moved to the end")
        return Reset(partition, current, at_time)
    if strategy == "offset":
        if offset is None:
            raise ValueError("strategy 'offset' needs an offset")
        if offset < earliest:
            return Reset(partition, current, earliest, f"{offset} is before the log start: clamped")
        if offset > latest:
            return Reset(partition, current, latest, f"{offset} is past the log end: clamped")
        return Reset(partition, current, offset)
    raise ValueError(f"unknown strategy {strategy!r}")
