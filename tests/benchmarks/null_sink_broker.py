"""A Kafka broker that validates produce batches and acknowledges them without storing anything.

It is the ceiling ``bench_produce.py`` compares tidelog against: the same
framing, the same wire codec and the same CRC check as the real broker, and
nothing else -- no buffering, no flush, no object store, no metadata store.
Whatever rate a producer reaches against it is what the client, the codec
and Python's asyncio loop allow on this machine; the gap to tidelog is the
cost of durability.

It answers ApiVersions, Metadata, InitProducerId and Produce.  It also
advertises Fetch, only because librdkafka infers record-batch v2 support
from Produce >= 3 *and* Fetch >= 4 and otherwise sends the legacy v0
message format; a Fetch is answered with an error.  Offsets are assigned
per partition in arrival order so clients see increasing base offsets; the
data is dropped.

Run: ``python tests/benchmarks/null_sink_broker.py --port 19092 --topic bench:8``.
It prints one ``ready port=N`` line once listening and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from dataclasses import dataclass, field

from tidelog.broker import wire
from tidelog.broker.errors import ErrorCode
from tidelog.broker.framing import FrameError, FrameParser
from tidelog.storage.errors import TidelogError
from tidelog.storage.records import DEFAULT_MAX_BATCH_BYTES, validate_produce_records

PRODUCE, FETCH, METADATA, API_VERSIONS, INIT_PRODUCER_ID = 0, 1, 3, 18, 22
APIS = {key: span for key, span in wire.SUPPORTED_APIS.items()
        if key in (PRODUCE, FETCH, METADATA, API_VERSIONS, INIT_PRODUCER_ID)}
MAX_REQUEST_BYTES = 100 * 1024 * 1024


@dataclass
class Sink:
    """All the state the null sink keeps: topic shapes, next offsets and producer ids."""

    host: str
    port: int
    topics: dict[str, int]
    node_id: int = 0
    topic_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    next_producer_id: int = 1000
    records_acked: int = 0

    def __post_init__(self) -> None:
        self.topic_ids = {name: uuid.uuid4() for name in self.topics}

    def handle(self, payload: bytes) -> bytes | None:
        """One framed request in, one framed response out (None: acks=0 produce)."""
        try:
            request = wire.decode_request(payload, apis=APIS)
        except wire.RequestError as exc:
            answer = wire.failure_response(exc, apis=APIS)
            if answer is None:
                raise FrameError("request cannot be answered", api_key=exc.api_key) from exc
            return answer
        if request.api_key == API_VERSIONS:
            return wire.encode_response(request, wire.api_versions_body(request.api_version, apis=APIS))
        if request.api_key == METADATA:
            return wire.encode_response(request, self._metadata(request))
        if request.api_key == INIT_PRODUCER_ID:
            R = wire.response_class(INIT_PRODUCER_ID, request.api_version, apis=APIS)
            self.next_producer_id += 1
            return wire.encode_response(request, R(throttle_time_ms=0, error_code=0,
                                                   producer_id=self.next_producer_id, producer_epoch=0))
        if request.api_key == FETCH:
            return wire.error_response(request, ErrorCode.UNKNOWN_SERVER_ERROR, message="the null sink stores nothing")
        body = self._produce(request)
        return None if body is None else wire.encode_response(request, body)

    def _metadata(self, request: wire.DecodedRequest):
        R = wire.response_class(METADATA, request.api_version, apis=APIS)
        T = R.MetadataResponseTopic
        P = T.MetadataResponsePartition
        wanted = list(self.topics) if request.body.topics is None else [t.name for t in request.body.topics]
        topics = []
        for name in wanted:
            count = self.topics.get(name)
            if count is None:
                topics.append(T(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name=name, partitions=[]))
                continue
            parts = [P(error_code=0, partition_index=p, leader_id=self.node_id, leader_epoch=0,
                       replica_nodes=[self.node_id], isr_nodes=[self.node_id], offline_replicas=[])
                     for p in range(count)]
            topics.append(T(error_code=0, name=name, topic_id=self.topic_ids[name], is_internal=False, partitions=parts))
        brokers = [R.MetadataResponseBroker(node_id=self.node_id, host=self.host, port=self.port, rack=None)]
        return R(throttle_time_ms=0, brokers=brokers, cluster_id="null-sink", controller_id=self.node_id,
                 topics=topics, error_code=0)

    def _produce(self, request: wire.DecodedRequest):
        body = request.body
        R = wire.response_class(PRODUCE, request.api_version, apis=APIS)
        TR = R.TopicProduceResponse
        PR = TR.PartitionProduceResponse
        out = []
        for t in body.topic_data:
            rows = []
            for p in t.partition_data:
                rows.append(self._append(PR, t.name, p.index, p.records))
            out.append(TR(name=t.name, partition_responses=rows))
        if body.acks == 0:
            return None
        return R(responses=out, throttle_time_ms=0)

    def _append(self, PR, topic: str, partition: int, records: bytes | None):
        def refuse(code: int):
            return PR(index=partition, error_code=code, base_offset=-1, log_append_time_ms=-1, log_start_offset=-1)

        if not 0 <= partition < self.topics.get(topic, 0):
            return refuse(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        if not records:
            return refuse(ErrorCode.CORRUPT_MESSAGE)
        try:
            batches = validate_produce_records(records, max_batch_bytes=DEFAULT_MAX_BATCH_BYTES)
        except TidelogError as exc:
            return refuse(exc.kafka_code)
        header = batches[0][1]
        base = self.next_offsets.get((topic, partition), 0)
        self.next_offsets[(topic, partition)] = base + header.last_offset_delta + 1
        self.records_acked += header.record_count
        return PR(index=partition, error_code=0, base_offset=base, log_append_time_ms=-1, log_start_offset=0)


async def serve_connection(sink: Sink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           open_writers: set[asyncio.StreamWriter]) -> None:
    """Requests are handled inline, in order: with no I/O behind them there is nothing to overlap."""
    parser = FrameParser(MAX_REQUEST_BYTES)
    open_writers.add(writer)
    try:
        while chunk := await reader.read(1 << 20):
            parser.feed(chunk)
            while (frame := parser.next_frame()) is not None:
                answer = sink.handle(frame)
                if answer is not None:
                    writer.write(answer)
            await writer.drain()
    except (FrameError, ConnectionError):
        pass
    finally:
        open_writers.discard(writer)
        writer.close()


def parse_topic(text: str) -> tuple[str, int]:
    name, _, count = text.partition(":")
    if not name or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME:PARTITIONS, got {text!r}")
    return name, int(count)


async def main_async(args: argparse.Namespace) -> None:
    sink = Sink(args.host, args.port, dict(args.topic))
    open_writers: set[asyncio.StreamWriter] = set()
    server = await asyncio.start_server(lambda r, w: serve_connection(sink, r, w, open_writers),
                                        args.host, args.port, limit=1 << 20)
    sink.port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready port={sink.port}", flush=True)
    async with server:
        await stop.wait()
        # Closing (rather than cancelling) each connection lets its reader see EOF and end cleanly.
        for writer in list(open_writers):
            writer.close()
        for _ in range(200):  # at most 2 s; exit regardless after that
            if not open_writers:
                break
            await asyncio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--topic", type=parse_topic, action="append", default=[],
                        help="NAME:PARTITIONS, repeatable (default bench:8)")
    args = parser.parse_args()
    args.topic = args.topic or [("bench", 8)]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
