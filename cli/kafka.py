"""The CLI's connection to a Kafka-compatible broker, through confluent-kafka.

One :class:`Kafka` per command invocation.  It builds clients with shared
settings (bootstrap, client id, the user's ``-X`` overrides), keeps
librdkafka's own log lines off the terminal, and turns the client's failures
into :class:`~tidelog.cli.errors.CliError` so commands never leak a traceback.

Reachability: librdkafka retries a dead broker forever, so a command would
hang.  :meth:`Kafka.metadata` asks for metadata in short slices and fails fast
once the client reports that every broker is down (connection refused, name
not found), or after ``connect_timeout`` seconds of silence (env
``TIDELOG_CONNECT_TIMEOUT``, default 5).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any, Callable, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, TopicMetadata

from .errors import UNREACHABLE, CliError, from_kafka, transport_reason, unreachable

CLIENT_ID = "tidelog-cli"
CONNECT_TIMEOUT_S = float(os.environ.get("TIDELOG_CONNECT_TIMEOUT", "5"))
REQUEST_TIMEOUT_S = 30.0
_PROBE_SLICE_S = 0.25
RETRIABLE = frozenset({"LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION", "NOT_LEADER_OR_FOLLOWER",
                       "REQUEST_TIMED_OUT", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE",
                       "NOT_COORDINATOR", "UNKNOWN_LEADER_EPOCH", "FENCED_LEADER_EPOCH"})
T = TypeVar("T")


class Kafka:
    def __init__(self, bootstrap: str, extra: dict[str, str] | None = None, *,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.bootstrap = bootstrap
        self.extra = dict(extra or {})
        self.connect_timeout = connect_timeout
        self._errors: list[KafkaError] = []
        self._untaken: list[KafkaError] = []
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._metadata: ClusterMetadata | None = None

    # -- clients -------------------------------------------------------

    def config(self, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        # log_level 0 keeps librdkafka's "%3|...|FAIL|" lines off stderr; the
        # same information arrives through error_cb and is reported by us.
        base = {"bootstrap.servers": self.bootstrap, "client.id": CLIENT_ID, "log_level": 0,
                "error_cb": self._on_error}
        base.update(settings or {})
        base.update(self.extra)
        return base

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = self._build(AdminClient, self.config())
        return self._admin

    def producer(self, settings: dict[str, Any] | None = None) -> Producer:
        return self._build(Producer, self.config(settings))

    def consumer(self, settings: dict[str, Any] | None = None) -> Consumer:
        # The client insists on a group id even when it only assigns partitions.
        return self._build(Consumer, self.config({"group.id": CLIENT_ID, **(settings or {})}))

    @staticmethod
    def _build(cls, config: dict[str, Any]):
        try:
            return cls(config)
        except (KafkaException, ValueError, TypeError) as exc:
            raise CliError(f"invalid client setting: {_text(exc)}: check the -X options") from exc

    def _on_error(self, err: KafkaError) -> None:
        with self._lock:
            self._errors.append(err)
            del self._errors[:-50]
            self._untaken.append(err)
            del self._untaken[:-50]

    def take_errors(self) -> list[KafkaError]:
        """Client errors reported since the last call (served by the client's poll/consume)."""
        with self._lock:
            taken, self._untaken = self._untaken, []
        return taken

    def recent_errors(self) -> list[KafkaError]:
        with self._lock:
            return list(self._errors)

    def all_brokers_down(self) -> str | None:
        """The reason text if the client has given up on every broker, else None."""
        errors = self.recent_errors()
        if not any(e.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE) for e in errors):
            return None
        for err in reversed(errors):
            if err.code() in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
                return transport_reason(err.str()) or "broker transport failure"
        return "all brokers are down"

    # -- metadata ------------------------------------------------------

    def metadata(self, refresh: bool = False) -> ClusterMetadata:
        """Cluster metadata (all topics), proving the broker is reachable."""
        if self._metadata is not None and not refresh:
            return self._metadata
        admin = self.admin()
        deadline = time.monotonic() + self.connect_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                # No topic argument: asking for one named topic could auto-create it.
                self._metadata = admin.list_topics(timeout=max(0.05, min(_PROBE_SLICE_S, remaining)))
                return self._metadata
            except KafkaException as exc:
                if exc.args[0].name() not in UNREACHABLE:
                    raise from_kafka(exc, bootstrap=self.bootstrap) from None
            admin.poll(0)  # serves error_cb
            reason = self.all_brokers_down()
            if reason:
                raise unreachable(self.bootstrap, reason)
            if time.monotonic() >= deadline:
                raise unreachable(self.bootstrap, f"no answer within {self.connect_timeout:g}s")

    def topic(self, name: str, refresh: bool = False) -> TopicMetadata:
        """A topic's metadata, or a friendly "does not exist" error."""
        meta = self.metadata(refresh=refresh).topics.get(name)
        if meta is None or (meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise from_kafka(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), topic=name)
        if meta.error is not None:
            raise from_kafka(meta.error, topic=name)
        return meta

    def partitions(self, name: str) -> list[int]:
        return sorted(self.topic(name).partitions)

    def check_partition(self, topic: str, partition: int | None) -> list[int]:
        """The partitions to work on: all of the topic's, or the one asked for if it exists."""
        parts = self.partitions(topic)
        if partition is None:
            return parts
        if partition not in parts:
            raise CliError(f"topic {topic!r} has no partition {partition}: it has partitions 0..{len(parts) - 1}")
        return [partition]

    # -- admin futures --------------------------------------------------

    def wait(self, future: concurrent.futures.Future, **context: Any):
        """The result of an AdminClient future, with errors made friendly."""
        try:
            return future.result(timeout=REQUEST_TIMEOUT_S + 5)
        except KafkaException as exc:
            raise from_kafka(exc, bootstrap=self.bootstrap, **context) from None
        except concurrent.futures.TimeoutError:
            raise CliError(f"the broker at {self.bootstrap} did not answer within {REQUEST_TIMEOUT_S:g}s: "
                           "is it overloaded?") from None

    def retrying(self, attempt: Callable[[], T], *, seconds: float = 10.0, **context: Any) -> T:
        """Run ``attempt`` again while it fails with a transient error.

        Right after a broker starts (or a topic is created) its partitions may
        briefly have no leader; an operator's command should ride that out
        rather than print LEADER_NOT_AVAILABLE.
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                return attempt()
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.name() in RETRIABLE) or time.monotonic() >= deadline:
                    raise from_kafka(exc, bootstrap=self.bootstrap, **context) from None
            time.sleep(0.2)

    def watermarks(self, consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
        """(log start, log end) of one partition, asked of the broker (not cached)."""
        return self.retrying(lambda: consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=REQUEST_TIMEOUT_S, cached=False), topic=topic)


def _text(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].str()
    return str(exc)
