"""The storage error vocabulary.

Every error tells the caller what to do next, and carries the Kafka error code
the broker answers with, so handlers never need to inspect messages.  Messages
are lowercase, with context as ``key=value`` at the end.
"""

from __future__ import annotations

from typing import Any

# Kafka error codes used by storage errors (subset of the protocol table).
UNKNOWN_SERVER_ERROR = -1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
KAFKA_STORAGE_ERROR = 56
INVALID_REQUEST = 42
TOPIC_ALREADY_EXISTS = 36


class TidelogError(Exception):
    """Base of every error tidelog raises on purpose."""

    kafka_code: int = UNKNOWN_SERVER_ERROR
    retriable: bool = False

    def __init__(self, message: str, **context: Any) -> None:
        self.context = context
        if context:
            message = message + " " + " ".join(f"{k}={v}" for k, v in context.items())
        super().__init__(message)


class Conflict(TidelogError):
    """A conditional write lost: refresh the state carried in ``current`` and retry or stop.

    ``current`` is the item as the store holds it now (``None`` when absent),
    and ``index`` says which operation of a multi-item write failed.
    """

    kafka_code = UNKNOWN_SERVER_ERROR
    retriable = True

    def __init__(self, message: str, *, current: Any = None, index: int = 0, **context: Any) -> None:
        super().__init__(message, **context)
        self.current = current
        self.index = index


class Fenced(Conflict):
    """Our session, lease or generation is stale: stop acting for this resource."""

    kafka_code = NOT_LEADER_OR_FOLLOWER
    retriable = False


class AlreadyExists(Conflict):
    """A create-only write found the key taken (an object, a topic, a commit)."""

    kafka_code = TOPIC_ALREADY_EXISTS
    retriable = False


class NotFound(TidelogError):
    """The object or item does not exist."""

    kafka_code = UNKNOWN_TOPIC_OR_PARTITION


class Unavailable(TidelogError):
    """A backend is slow, throttling or unreachable: retry with backoff."""

    kafka_code = KAFKA_STORAGE_ERROR
    retriable = True


class Ambiguous(Unavailable):
    """A write may or may not have happened (timeout after send): re-read before retrying."""


class InvalidRequest(TidelogError):
    """The caller asked for something malformed or impossible; do not retry as is."""

    kafka_code = INVALID_REQUEST


class CorruptData(TidelogError):
    """Bytes failed validation (CRC, framing, Avro); the data must not be used."""

    kafka_code = CORRUPT_MESSAGE


class Internal(TidelogError):
    """A bug or broken invariant in tidelog itself."""
