"""Capture golden request bytes from real Kafka clients, and the fake broker that does it.

Run from the repository root to regenerate the fixtures next to this file::

    /tmp/venv/bin/python -m tests.unit.golden.capture

``FakeBroker`` is a single-node broker on a loopback port built only from
``tidelog.broker.framing`` and ``tidelog.broker.wire``: just enough of
ApiVersions, Metadata, InitProducerId, FindCoordinator, Produce, ListOffsets
and Fetch for a client to bootstrap, produce one batch and poll once.  It
records every request payload it receives.  The unit tests reuse it to run
real clients against a deliberately narrow ApiVersions range.

Each fixture is ``<client>-<api>-v<version>.hex``: ``#`` comment lines, then
the request payload (without its size prefix) in hex.  Only the first request
per client, api and version is kept, so fixtures stay small.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidelog.broker import wire
from tidelog.broker.errors import ErrorCode
from tidelog.broker.framing import FrameError, FrameParser

GOLDEN_DIR = Path(__file__).resolve().parent
TOPIC = "golden"
TOPIC_ID = uuid.UUID("6f1d2c9e-8a61-4c52-9d3f-1b2a3c4d5e6f")
NODE_ID = 0
PRODUCER_ID = 1000


@dataclass
class Recorded:
    """One request payload as the broker received it, with the connection it came on."""

    connection: int
    payload: bytes


@dataclass
class FakeBroker:
    """A one-partition broker answering through tidelog's wire layer (test scaffolding)."""

    apis: Mapping[int, tuple[int, int]] = field(default_factory=lambda: dict(wire.SUPPORTED_APIS))
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _connections: int = 0
    _open: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Server.wait_closed does not wait for live connections (3.11): close them here
        # so no handler task is left for the event loop to cancel at shutdown.
        for writer in self._open.values():
            writer.close()
        await asyncio.gather(*self._open, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        connection = self._connections
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        parser = FrameParser(16 * 1024 * 1024)
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (payload := parser.next_frame()) is not None:
                    self.requests.append(Recorded(connection, payload))
                    answer = await self._answer(payload)
                    if answer is None:
                        return
                    writer.write(answer)
                await writer.drain()
        except (FrameError, ConnectionError):
            return
        finally:
            self._open.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, payload: bytes) -> bytes | None:
        try:
            request = wire.decode_request(payload, apis=self.apis)
        except wire.RequestError as exc:
            return wire.failure_response(exc, apis=self.apis)
        handler = _HANDLERS.get(request.api_key)
        if handler is None:
            return wire.error_response(request, ErrorCode.UNSUPPORTED_VERSION, apis=self.apis)
        if request.api_key == wire.ApiKey.Fetch:
            # Honour a little of max_wait_ms so polling clients do not spin.
            await asyncio.sleep(min(request.body.max_wait_ms, 100) / 1000)
        return wire.encode_response(request, handler(self, request))

    # -- handlers ---------------------------------------------------------

    def _api_versions(self, request: wire.DecodedRequest) -> Any:
        return wire.api_versions_body(request.api_version, apis=self.apis)

    def _metadata(self, request: wire.DecodedRequest) -> Any:
        asked = request.body.topics
        # All topics: a null list, or in v0 an empty one.
        if asked is None or (request.api_version == 0 and not asked):
            names = [TOPIC]
        else:
            names = [t.name or TOPIC for t in asked]
        partition = {
            "partition_index": 0,
            "leader_id": NODE_ID,
            "leader_epoch": 0,
            "replica_nodes": [NODE_ID],
            "isr_nodes": [NODE_ID],
            "offline_replicas": [],
        }
        return wire.make_response(
            request,
            brokers=[{"node_id": NODE_ID, "host": "127.0.0.1", "port": self.port, "rack": None}],
            cluster_id="golden-cluster",
            controller_id=NODE_ID,
            topics=[{"name": n, "topic_id": TOPIC_ID, "partitions": [partition]} for n in names],
        )

    def _init_producer_id(self, request: wire.DecodedRequest) -> Any:
        return wire.make_response(request, producer_id=PRODUCER_ID, producer_epoch=0)

    def _find_coordinator(self, request: wire.DecodedRequest) -> Any:
        where = {"node_id": NODE_ID, "host": "127.0.0.1", "port": self.port}
        if request.api_version >= 4:
            keys = request.body.coordinator_keys
            return wire.make_response(request, coordinators=[{"key": k, **where} for k in keys])
        return wire.make_response(request, **where)

    def _produce(self, request: wire.DecodedRequest) -> Any:
        responses = [
            {
                "name": topic.name,
                "partition_responses": [{"index": p.index, "base_offset": 0} for p in topic.partition_data],
            }
            for topic in request.body.topic_data
        ]
        return wire.make_response(request, responses=responses)

    def _list_offsets(self, request: wire.DecodedRequest) -> Any:
        topics = [
            {
                "name": topic.name,
                "partitions": [
                    {"partition_index": p.partition_index, "offset": 0, "timestamp": -1, "leader_epoch": 0}
                    for p in topic.partitions
                ],
            }
            for topic in request.body.topics
        ]
        return wire.make_response(request, topics=topics)

    def _fetch(self, request: wire.DecodedRequest) -> Any:
        responses = [
            {
                "topic": topic.topic,
                "topic_id": topic.topic_id,
                "partitions": [
                    {
                        "partition_index": p.partition,
                        "high_watermark": 0,
                        "last_stable_offset": 0,
                        "log_start_offset": 0,
                        "records": b"",
                    }
                    for p in topic.partitions
                ],
            }
            for topic in request.body.topics
        ]
        return wire.make_response(request, responses=responses)


_HANDLERS: dict[int, Callable[[FakeBroker, wire.DecodedRequest], Any]] = {
    wire.ApiKey.ApiVersions: FakeBroker._api_versions,
    wire.ApiKey.Metadata: FakeBroker._metadata,
    wire.ApiKey.InitProducerId: FakeBroker._init_producer_id,
    wire.ApiKey.FindCoordinator: FakeBroker._find_coordinator,
    wire.ApiKey.Produce: FakeBroker._produce,
    wire.ApiKey.ListOffsets: FakeBroker._list_offsets,
    wire.ApiKey.Fetch: FakeBroker._fetch,
}


# -- client drivers (blocking; run them in a thread) --------------------------


def kafka_python_list_topics(bootstrap: str) -> list[str]:
    """Bootstrap kafka-python's admin client and return the topics it saw."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        return sorted(admin.list_topics())
    finally:
        admin.close()


def kafka_python_produce(bootstrap: str) -> None:
    from kafka import KafkaProducer

    # acks=all keeps kafka-python's default idempotence, so InitProducerId is captured too.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, request_timeout_ms=5000)
    try:
        producer.send(TOPIC, key=b"key", value=b"golden value", partition=0).get(timeout=10)
    finally:
        producer.close(timeout=5)


def kafka_python_consume(bootstrap: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=5000,
    )
    try:
        consumer.assign([TopicPartition(TOPIC, 0)])
        for _ in range(3):
            consumer.poll(timeout_ms=200)
    finally:
        consumer.close()


def confluent_list_topics(bootstrap: str) -> list[str]:
    """Bootstrap librdkafka and return the topics it saw."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    return sorted(admin.list_topics(timeout=10).topics)


def confluent_produce(bootstrap: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})
    producer.produce(TOPIC, key=b"key", value=b"golden value", partition=0)
    left = producer.flush(10)
    if left:
        raise RuntimeError(f"librdkafka did not deliver the golden message, {left} left")


def confluent_consume(bootstrap: str) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "golden-group",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
        for _ in range(5):
            consumer.poll(0.2)
    finally:
        consumer.close()


async def aiokafka_produce(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, key=b"key", value=b"golden value", partition=0)
    finally:
        await producer.stop()


# -- fixtures -------------------------------------------------------------------


def read_fixture(path: Path) -> bytes:
    """The payload stored in a ``.hex`` fixture."""
    lines = path.read_text().splitlines()
    return bytes.fromhex("".join(line.strip() for line in lines if not line.startswith("#")))


def iter_fixtures() -> Iterator[Path]:
    return iter(sorted(GOLDEN_DIR.glob("*.hex")))


def _api_name(api_key: int) -> str:
    try:
        return wire.ApiKey(api_key).name
    except ValueError:
        return f"api{api_key}"


def _write_fixtures(
    client: str, describe: str, requests: list[Recorded], keep: Callable[[bytes], bool] | None
) -> list[Path]:
    written = []
    seen: set[tuple[int, int]] = set()
    for recorded in requests:
        payload = recorded.payload
        api_key = int.from_bytes(payload[0:2], "big", signed=True)
        version = int.from_bytes(payload[2:4], "big", signed=True)
        if (api_key, version) in seen or (keep is not None and not keep(payload)):
            continue
        seen.add((api_key, version))
        path = GOLDEN_DIR / f"{client}-{_api_name(api_key)}-v{version}.hex"
        hexed = payload.hex()
        body = "\n".join(hexed[i : i + 64] for i in range(0, len(hexed), 64))
        path.write_text(
            f"# {describe}: {_api_name(api_key)} v{version} request payload, {len(payload)} bytes\n"
            f"# captured by tests/unit/golden/capture.py; the size prefix is not included\n{body}\n"
        )
        written.append(path)
    return written


def _is_all_topics_metadata(payload: bytes) -> bool:
    request = wire.decode_request(payload)
    return request.api_key == wire.ApiKey.Metadata and request.body.topics is None


async def _capture(
    client: str,
    describe: str,
    run: Callable[[str], Any],
    *,
    is_async: bool = False,
    keep: Callable[[bytes], bool] | None = None,
) -> list[Path]:
    async with FakeBroker() as broker:
        if is_async:
            await run(broker.bootstrap)
        else:
            await asyncio.to_thread(run, broker.bootstrap)
        return _write_fixtures(client, describe, broker.requests, keep)


async def main() -> None:
    import aiokafka
    import confluent_kafka
    import kafka

    kp = f"kafka-python {kafka.__version__}"
    ck = f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})"
    ak = f"aiokafka {aiokafka.__version__}"
    written: list[Path] = []
    written += await _capture("kafka-python", kp, kafka_python_produce)
    written += await _capture("kafka-python", kp, kafka_python_consume)
    written += await _capture("confluent-kafka", ck, confluent_produce)
    written += await _capture("confluent-kafka", ck, confluent_consume)
    # librdkafka's all-topics Metadata request carries three trailing bytes.
    written += await _capture("confluent-kafka-all-topics", ck, confluent_list_topics, keep=_is_all_topics_metadata)
    written += await _capture("aiokafka", ak, aiokafka_produce, is_async=True)
    for path in sorted(set(written)):
        print(path.relative_to(GOLDEN_DIR.parents[2]))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
