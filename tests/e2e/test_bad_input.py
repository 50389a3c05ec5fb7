"""Hostile and broken requests over raw sockets: the right error code, or a clean close.

Requests are built with kafka-python's ``kafka.protocol`` (an independent
encoder) and then damaged by hand.  Rules from broker/wire.py and
broker/server.py: every framed request with a readable header gets an answer
carrying a Kafka error code; only bytes that cannot be framed (a negative or
oversize length prefix), a payload too short for a header, or an API the
codec cannot answer close the connection.  After every case the broker
process must still be alive, and a connection opened before the abuse must
still be answered.
"""

from __future__ import annotations

import os
import struct
import uuid

import pytest
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceResponse

from .clients import At, Rec, consume, create_topic, produce
from .raw import PRODUCE_V, Raw, batch, produce_request

CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION, MESSAGE_TOO_LARGE = 2, 3, 10
INVALID_TOPIC_EXCEPTION, INVALID_REQUIRED_ACKS, UNSUPPORTED_VERSION, INVALID_REQUEST = 17, 21, 35, 42


def partition_error(response) -> int:
    return response.responses[0].partition_responses[0].error_code


@pytest.fixture(scope="module")
def topic(broker) -> str:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, name, 1)
    return name


@pytest.fixture(scope="module")
def canary(broker):
    """A connection opened before any abuse; every test checks it still gets answers."""
    conn = Raw(broker.port)
    yield conn
    conn.close()


@pytest.fixture(autouse=True)
def still_healthy(broker, canary, topic):
    yield
    assert broker.proc.poll() is None, f"broker died:\n{broker.logs()[-3000:]}"
    response = canary.call(MetadataRequest[12](topics=[MetadataRequest[12].MetadataRequestTopic(topic_id=None, name=topic)],
                                               allow_auto_topic_creation=False,
                                               include_topic_authorized_operations=False), MetadataResponse[12])
    assert response.topics[0].error_code == 0
    fresh = Raw(broker.port)
    try:
        assert fresh.call(ApiVersionsRequest[3](client_software_name="t", client_software_version="1"),
                          ApiVersionsResponse[3]).error_code == 0
    finally:
        fresh.close()


def test_valid_raw_produce_is_accepted(broker, topic) -> None:
    conn = Raw(broker.port)
    response = conn.call(produce_request(topic, 0, bytes(batch(b"raw"))), ProduceResponse[PRODUCE_V])
    assert partition_error(response) == 0
    conn.close()


def test_corrupt_crc_is_corrupt_message(broker, topic) -> None:
    data = batch(b"payload")
    data[-1] ^= 0xFF  # inside the CRC-covered records
    conn = Raw(broker.port)
    assert partition_error(conn.call(produce_request(topic, 0, bytes(data)), ProduceResponse[PRODUCE_V])) == CORRUPT_MESSAGE
    # The same connection stays usable for a good request.
    assert partition_error(conn.call(produce_request(topic, 0, bytes(batch())), ProduceResponse[PRODUCE_V])) == 0
    conn.close()


def test_truncated_batch_is_corrupt_message(broker, topic) -> None:
    data = bytes(batch(b"x" * 100))[:-10]
    conn = Raw(broker.port)
    assert partition_error(conn.call(produce_request(topic, 0, data), ProduceResponse[PRODUCE_V])) == CORRUPT_MESSAGE
    conn.close()


def test_oversize_batch_is_message_too_large(broker, topic) -> None:
    # Valid CRC, one record of 1.1 MiB: over the topic's default max.message.bytes (1048588).
    data = bytes(batch(b"x" * (1100 * 1024)))
    conn = Raw(broker.port)
    assert partition_error(conn.call(produce_request(topic, 0, data), ProduceResponse[PRODUCE_V])) == MESSAGE_TOO_LARGE
    conn.close()


def test_unknown_topic_and_partition(broker, topic) -> None:
    conn = Raw(broker.port)
    response = conn.call(produce_request(f"missing-{uuid.uuid4().hex[:6]}", 0, bytes(batch())), ProduceResponse[PRODUCE_V])
    assert partition_error(response) == UNKNOWN_TOPIC_OR_PARTITION
    response = conn.call(produce_request(topic, 7, bytes(batch())), ProduceResponse[PRODUCE_V])
    assert partition_error(response) == UNKNOWN_TOPIC_OR_PARTITION
    conn.close()


def test_bad_acks_is_invalid_required_acks(broker, topic) -> None:
    conn = Raw(broker.port)
    response = conn.call(produce_request(topic, 0, bytes(batch()), acks=5), ProduceResponse[PRODUCE_V])
    assert partition_error(response) == INVALID_REQUIRED_ACKS
    conn.close()


@pytest.mark.parametrize("name", ["bad/name", "", ".", "..", "x" * 250, "spaces are bad", "ünïcode"])
def test_invalid_topic_name_in_create_topics(broker, name: str) -> None:
    R = CreateTopicsRequest[7]
    conn = Raw(broker.port)
    response = conn.call(R(topics=[R.CreatableTopic(name=name, num_partitions=1, replication_factor=1, assignments=[],
                                                    configs=[])], timeout_ms=5000, validate_only=False),
                         CreateTopicsResponse[7])
    assert [(t.name, t.error_code) for t in response.topics] == [(name, INVALID_TOPIC_EXCEPTION)]
    conn.close()


def test_api_versions_v99_gets_a_v0_answer_with_unsupported_version(broker) -> None:
    conn = Raw(broker.port)
    # Hand-built: kafka-python cannot encode a version it does not know.
    header = struct.pack(">hhih", 18, 99, 4242, 3) + b"raw"
    conn.send_bytes(struct.pack(">i", len(header) + 5) + header + b"\x00\x00\x00\x00\x00")
    payload = conn.recv()
    response = ApiVersionsResponse[0].decode(payload, header=True)
    assert response.header.correlation_id == 4242
    assert response.error_code == UNSUPPORTED_VERSION
    assert {k.api_key for k in response.api_keys} >= {0, 1, 2, 3, 18}
    conn.close()


def test_produce_v99_closes_or_errors(broker, topic) -> None:
    conn = Raw(broker.port)
    body = bytes(produce_request(topic, 0, bytes(batch())).encode(version=PRODUCE_V))
    header = struct.pack(">hhih", 0, 99, 7, 3) + b"raw"
    conn.send_bytes(struct.pack(">i", len(header) + len(body)) + header + body)
    payload = conn.recv()
    if payload is not None:  # an answer must be an error for our correlation id
        (correlation_id,) = struct.unpack_from(">i", payload)
        assert correlation_id == 7
        assert payload != b""
    conn.close()


@pytest.mark.parametrize("prefix", [b"\xff\xff\xff\xff", b"\x80\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x10\x00\x00\x00"],
                         ids=["minus-one", "most-negative", "max-int", "256-MiB"])
def test_unframeable_length_prefix_closes_the_connection(broker, prefix: bytes) -> None:
    conn = Raw(broker.port)
    conn.send_bytes(prefix + os.urandom(64))
    assert conn.recv() is None
    conn.close()


def test_payload_shorter_than_a_header_closes(broker) -> None:
    conn = Raw(broker.port)
    conn.send_bytes(struct.pack(">i", 5) + b"\x00\x12\x00\x03\x00")
    assert conn.recv() is None
    conn.close()


def test_truncated_frame_then_close_does_not_hurt_the_broker(broker) -> None:
    for sent in (2, 4, 10, 500):
        conn = Raw(broker.port)
        frame = struct.pack(">i", 1000) + os.urandom(1000)
        conn.send_bytes(frame[:sent])
        conn.close()


def test_truncated_frame_while_pipelining(broker, topic) -> None:
    conn = Raw(broker.port)
    # A good request, then half of another: the first is answered, then the peer hangs up.
    cid = conn.send(produce_request(topic, 0, bytes(batch())))
    frame = produce_request(topic, 0, bytes(batch()))
    frame.with_header(99, client_id="x")
    data = bytes(frame.encode(header=True, framed=True))
    conn.send_bytes(data[: len(data) // 2])
    payload = conn.recv()
    assert payload is not None
    response = ProduceResponse[PRODUCE_V].decode(payload, header=True)
    assert response.header.correlation_id == cid and partition_error(response) == 0
    conn.close()


def test_unknown_api_key_closes(broker) -> None:
    conn = Raw(broker.port)
    header = struct.pack(">hhih", 0x7777, 0, 1, -1)
    conn.send_bytes(struct.pack(">i", len(header) + 16) + header + os.urandom(16))
    assert conn.recv() is None
    conn.close()


@pytest.mark.parametrize("seed", range(8))
def test_well_framed_garbage_for_a_known_api_gets_an_error_or_close(broker, seed: int) -> None:
    import random

    rng = random.Random(seed)
    api_key, version = rng.choice([(0, 9), (0, 3), (1, 12), (3, 12), (18, 3), (19, 7), (2, 7)])
    body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
    header = struct.pack(">hhih", api_key, version, 555, 4) + b"junk"
    conn = Raw(broker.port)
    conn.send_bytes(struct.pack(">i", len(header) + len(body)) + header + body)
    payload = conn.recv()
    if payload is not None:
        (correlation_id,) = struct.unpack_from(">i", payload)
        assert correlation_id == 555
    conn.close()


def test_malformed_body_gets_invalid_request_where_the_response_can_carry_it(broker) -> None:
    conn = Raw(broker.port)
    # Metadata v13 (flexible, with a top-level error code), body cut inside the topic array.
    header = struct.pack(">hhih", 3, 13, 31, 4) + b"junk" + b"\x00"  # no header tags
    body = b"\x05"  # four topics follow... and none do
    conn.send_bytes(struct.pack(">i", len(header) + len(body)) + header + body)
    payload = conn.recv()
    assert payload is not None
    response = MetadataResponse[13].decode(payload, header=True)
    assert (response.header.correlation_id, response.error_code) == (31, INVALID_REQUEST)
    conn.close()


def test_malformed_produce_body_closes(broker) -> None:
    # A Produce response has no top-level error code: with no partitions to
    # attribute an error to, an "answer" would read as success, so the broker
    # closes the connection (as Kafka does).
    conn = Raw(broker.port)
    header = struct.pack(">hhih", 0, PRODUCE_V, 32, 4) + b"junk" + b"\x00"
    body = b"\x00" + struct.pack(">hi", -1, 1000) + b"\x05"  # null txn id, acks, timeout, 4 topics, cut
    conn.send_bytes(struct.pack(">i", len(header) + len(body)) + header + body)
    assert conn.recv() is None
    conn.close()


def test_real_clients_still_work_after_the_abuse(broker, topic) -> None:
    ((_, offset),) = produce("kafka-python", broker.bootstrap, topic, [Rec(b"after", b"abuse")])
    got = consume("confluent", broker.bootstrap, topic, 0, 1, start=At(offset=offset))
    assert [(g.key, g.value) for g in got] == [(b"after", b"abuse")]
