"""The wire codec: golden requests from real clients, version negotiation, error answers.

Golden fixtures live in ``golden/`` and are regenerated with
``python -m tests.unit.golden.capture``.  Responses are always checked by
decoding them with kafka-python, an implementation independent of the
response-building code under test.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.golden.capture import (
    FakeBroker,
    confluent_list_topics,
    iter_fixtures,
    kafka_python_list_topics,
    read_fixture,
)
from tidelog.broker import wire
from tidelog.broker.errors import ErrorCode, code_for
from tidelog.broker.framing import FrameError
from tidelog.storage import errors as storage_errors

# kafka-python's classes are reached through wire (never imported here at the
# top): wire imports kafka with the schema-loading DeprecationWarning silenced.

FIXTURES = list(iter_fixtures())
# librdkafka's all-topics Metadata request ends in three bytes no schema field
# covers; Kafka ignores them and so do we.
TRAILING = {"confluent-kafka-all-topics-Metadata-v13.hex": 3}
CODE = ErrorCode.KAFKA_STORAGE_ERROR


def fixture_id(path: Path) -> str:
    return path.stem


def parse_name(path: Path) -> tuple[int, int]:
    api_name, version = path.stem.rsplit("-", 2)[-2:]
    return int(wire.ApiKey[api_name]), int(version.removeprefix("v"))


def request_cls(api_key: int) -> Any:
    """kafka-python's unversioned request class (index it with any version)."""
    return wire.request_class(api_key, wire.SUPPORTED_APIS[api_key][1]).__mro__[1]


def response_cls(api_key: int) -> Any:
    """kafka-python's unversioned response class."""
    return wire.response_class(api_key, wire.SUPPORTED_APIS[api_key][1]).__mro__[1]


def api_versions_response(version: int) -> Any:
    return response_cls(wire.ApiKey.ApiVersions)[version]


def decode_response(api_key: int, version: int, framed: bytes) -> Any:
    (size,) = struct.unpack_from(">i", framed)
    assert size == len(framed) - 4
    return response_cls(api_key)[version].decode(framed[4:], header=True)


def request_bytes(body: Any, correlation_id: int = 17, client_id: str | None = "test") -> bytes:
    body.with_header(correlation_id, client_id=client_id)
    return bytes(body.encode(header=True))


# ---------------------------------------------------------------- the table


def test_fixtures_are_present() -> None:
    clients = {p.stem.split("-")[0] for p in FIXTURES}
    assert {"kafka", "confluent", "aiokafka"} <= clients
    assert len(FIXTURES) >= 15


@pytest.mark.parametrize("api_key", sorted(wire.SUPPORTED_APIS), ids=lambda k: wire.ApiKey(k).name)
def test_supported_ranges_lie_within_the_schema(api_key: int) -> None:
    lo, hi = wire.SUPPORTED_APIS[api_key]
    request = wire.request_class(api_key, lo).__mro__[1]
    schema_lo, schema_hi = request.valid_versions
    assert schema_lo <= lo <= hi <= schema_hi
    assert request.API_KEY == api_key
    assert response_cls(api_key).API_KEY == api_key


def test_fetch_range_reaches_librdkafkas_topic_id_version() -> None:
    assert request_cls(wire.ApiKey.Fetch).max_version >= 16
    assert wire.SUPPORTED_APIS[wire.ApiKey.Fetch] == (4, 16)


def test_advertised_produce_range_starts_at_zero_for_librdkafka() -> None:
    advertised = wire.advertised_apis()
    assert advertised[wire.ApiKey.Produce] == (0, wire.SUPPORTED_APIS[wire.ApiKey.Produce][1])
    others = {k: v for k, v in advertised.items() if k != wire.ApiKey.Produce}
    assert others == {k: v for k, v in wire.SUPPORTED_APIS.items() if k != wire.ApiKey.Produce}


def test_class_lookup_refuses_what_we_do_not_support() -> None:
    with pytest.raises(storage_errors.Internal, match="api is not supported api_key=29"):
        wire.request_class(29, 1)
    with pytest.raises(storage_errors.Internal, match="api_version=2"):
        wire.response_class(wire.ApiKey.Produce, 2)


@pytest.mark.parametrize("api_key", sorted(wire.SUPPORTED_APIS), ids=lambda k: wire.ApiKey(k).name)
def test_header_versions_follow_flexible_versions(api_key: int) -> None:
    lo, hi = wire.SUPPORTED_APIS[api_key]
    for version in range(lo, hi + 1):
        flexible = wire.request_class(api_key, version).flexible_version_q(version)
        assert wire.request_header_version(api_key, version) == (2 if flexible else 1)
        expected = 0 if api_key == wire.ApiKey.ApiVersions else (1 if flexible else 0)
        assert wire.response_header_version(api_key, version) == expected


# ---------------------------------------------------------------- golden bytes


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_golden_request_decodes_and_reencodes_identically(path: Path) -> None:
    payload = read_fixture(path)
    api_key, version = parse_name(path)
    request = wire.decode_request(payload)
    assert (request.api_key, request.api_version) == (api_key, version)
    assert request.client_id
    assert request.header_version == wire.request_header_version(api_key, version)
    assert request.body.API_VERSION == version
    # kafka-python re-encodes the decoded body to the client's exact bytes:
    # nothing was dropped, including tagged fields.
    again = request_bytes(request.body, request.correlation_id, request.client_id)
    assert again == payload[: len(payload) - TRAILING.get(path.name, 0)]


def test_golden_produce_carries_the_clients_record_batch() -> None:
    from kafka.record import MemoryRecords

    produces = [p for p in FIXTURES if "-Produce-" in p.name]
    assert len(produces) == 3
    for path in produces:
        request = wire.decode_request(read_fixture(path))
        [topic] = request.body.topic_data
        [partition] = topic.partition_data
        assert (topic.name, partition.index) == ("golden", 0)
        batch = MemoryRecords(partition.records).next_batch()
        assert batch.magic == 2
        [record] = list(batch)
        assert (record.key, record.value) == (b"key", b"golden value")


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_golden_request_answer_round_trips_through_kafka_python(path: Path) -> None:
    request = wire.decode_request(read_fixture(path))
    if request.api_key == wire.ApiKey.ApiVersions:
        body = wire.api_versions_body(request.api_version)
        framed = wire.encode_response(request, body)
        decoded = decode_response(request.api_key, request.api_version, framed)
        assert decoded.error_code == 0
        listed = {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys}
        assert listed == wire.advertised_apis()
    else:
        framed = wire.error_response(request, CODE)
        decoded = decode_response(request.api_key, request.api_version, framed)
    assert decoded.header.correlation_id == request.correlation_id


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_every_truncation_of_a_golden_request_is_refused_but_answerable(path: Path) -> None:
    payload = read_fixture(path)
    complete = len(payload) - TRAILING.get(path.name, 0)
    api_key, version = parse_name(path)
    correlation_id = struct.unpack_from(">i", payload, 4)[0]
    for cut in range(len(payload)):
        prefix = payload[:cut]
        if cut < 8:
            with pytest.raises(wire.UnanswerableRequest):
                wire.decode_request(prefix)
            continue
        if cut >= complete:
            assert wire.decode_request(prefix).api_key == api_key
            continue
        with pytest.raises(wire.MalformedRequest) as caught:
            wire.decode_request(prefix)
        exc = caught.value
        assert (exc.api_key, exc.api_version, exc.correlation_id) == (api_key, version, correlation_id)
        answer = wire.failure_response(exc)
        if answer is None:
            # Only when the response has nowhere to put the error.
            assert api_key != wire.ApiKey.ApiVersions
            assert "error_code" not in response_fields_at(api_key, version)
            continue
        if api_key == wire.ApiKey.ApiVersions:
            decoded = api_versions_response(0).decode(answer[4:], header=True)
        else:
            decoded = decode_response(api_key, version, answer)
        assert decoded.header.correlation_id == correlation_id
        assert ErrorCode.INVALID_REQUEST in set(error_codes(decoded, api_key, decoded.API_VERSION))


def response_fields_at(api_key: int, version: int) -> set[str]:
    return {f.name for f in response_cls(api_key)._struct.fields.values() if f.for_version_q(version)}


def test_unanswerable_request_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="request shorter than its header size=7"):
        wire.decode_request(b"\x00" * 7)


def test_trailing_bytes_after_a_complete_body_are_ignored() -> None:
    path = next(p for p in FIXTURES if p.name == "kafka-python-Produce-v9.hex")
    payload = read_fixture(path)
    assert wire.decode_request(payload + b"\x00\x01\x02").body == wire.decode_request(payload).body


def test_client_id_may_be_null_or_invalid_utf8() -> None:
    head = struct.pack(">hhi", wire.ApiKey.ApiVersions, 0, 5)
    assert wire.decode_request(head + b"\xff\xff").client_id is None
    assert wire.decode_request(head + b"\x00\x02\xc3\x28").client_id == "\ufffd("


def test_negative_client_id_length_other_than_null_is_malformed() -> None:
    head = struct.pack(">hhi", wire.ApiKey.Heartbeat, 0, 5)
    with pytest.raises(wire.MalformedRequest, match="request header does not decode"):
        wire.decode_request(head + b"\xff\xfe")


def test_flexible_header_tagged_fields_are_skipped() -> None:
    body = request_cls(wire.ApiKey.ApiVersions)[3](client_software_name="x", client_software_version="1")
    payload = request_bytes(body)
    # Insert one unknown header tag (tag 5, 2 bytes) where the empty tag section was.
    header_end = 8 + 2 + len("test")
    assert payload[header_end] == 0
    tagged = payload[:header_end] + b"\x01\x05\x02ab" + payload[header_end + 1 :]
    request = wire.decode_request(tagged)
    assert request.body.client_software_name == "x"
    with pytest.raises(wire.MalformedRequest):
        wire.decode_request(payload[:header_end] + b"\x01\x05\x7fab")


# ---------------------------------------------------------------- unsupported versions


def test_api_versions_newer_than_ours_gets_the_v0_fallback() -> None:
    # A future client opening with ApiVersions v5: we cannot even parse its header.
    payload = struct.pack(">hhi", wire.ApiKey.ApiVersions, 5, 99) + b"\x00\x03abc\x00garbage"
    with pytest.raises(wire.UnsupportedVersion) as caught:
        wire.decode_request(payload)
    answer = wire.failure_response(caught.value)
    assert answer is not None
    # Header v0: nothing between the correlation id and the body's error code.
    assert struct.unpack_from(">iih", answer) == (len(answer) - 4, 99, ErrorCode.UNSUPPORTED_VERSION)
    decoded = api_versions_response(0).decode(answer[4:], header=True)
    assert decoded.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys} == wire.advertised_apis()


def test_kafka_pythons_api_versions_v4_against_a_v3_broker() -> None:
    capped = {**wire.SUPPORTED_APIS, wire.ApiKey.ApiVersions: (0, 3)}
    path = next(p for p in FIXTURES if p.name == "kafka-python-ApiVersions-v4.hex")
    with pytest.raises(wire.UnsupportedVersion) as caught:
        wire.decode_request(read_fixture(path), apis=capped)
    answer = wire.failure_response(caught.value, apis=capped)
    assert answer is not None
    # kafka-python's own decoder falls back to v0 on error, as the client does.
    decoded = api_versions_response(4).decode(answer[4:], header=True)
    assert decoded.error_code == ErrorCode.UNSUPPORTED_VERSION
    listed = {k.api_key: k.max_version for k in decoded.api_keys}
    assert listed[wire.ApiKey.ApiVersions] == 3


@pytest.mark.parametrize("api_key", [29, 999, -1])
def test_api_we_do_not_implement_is_refused_without_an_answer(api_key: int) -> None:
    payload = struct.pack(">hhi", api_key, 1, 3) + b"\x00\x00"
    with pytest.raises(wire.UnsupportedVersion, match=f"unsupported api api_key={api_key}") as caught:
        wire.decode_request(payload)
    assert caught.value.request is None
    assert wire.failure_response(caught.value) is None


@pytest.mark.parametrize(("api_key", "version"), [(wire.ApiKey.Metadata, 14), (wire.ApiKey.Fetch, 3)])
def test_version_no_schema_describes_is_refused_without_an_answer(api_key: int, version: int) -> None:
    payload = struct.pack(">hhi", api_key, version, 3) + b"\x00\x00"
    with pytest.raises(wire.UnsupportedVersion, match=f"api_version={version}") as caught:
        wire.decode_request(payload)
    assert wire.failure_response(caught.value) is None


@pytest.mark.parametrize("version", [0, 1, 2])
def test_advertised_but_unsupported_produce_gets_per_partition_errors(version: int) -> None:
    produce = request_cls(wire.ApiKey.Produce)[version]
    topic = produce.TopicProduceData
    body = produce(
        acks=1,
        timeout_ms=100,
        topic_data=[topic(name="t", partition_data=[topic.PartitionProduceData(index=4, records=b"old")])],
    )
    with pytest.raises(wire.UnsupportedVersion) as caught:
        wire.decode_request(request_bytes(body))
    assert caught.value.request is not None and caught.value.request.body is not None
    answer = wire.failure_response(caught.value)
    assert answer is not None
    decoded = decode_response(wire.ApiKey.Produce, version, answer)
    [topic_response] = decoded.responses
    assert topic_response.name == "t"
    [partition] = topic_response.partition_responses
    assert (partition.index, partition.error_code) == (4, ErrorCode.UNSUPPORTED_VERSION)


def test_refusal_that_could_not_carry_an_error_closes_the_connection() -> None:
    # Produce v2 with an undecodable body: no partitions to echo, and a
    # ProduceResponse has no top-level error code, so an answer would read
    # as an empty success.
    payload = struct.pack(">hhi", wire.ApiKey.Produce, 2, 8) + b"\x00\x00" + b"\x01"
    with pytest.raises(wire.UnsupportedVersion) as caught:
        wire.decode_request(payload)
    assert caught.value.request is not None and caught.value.request.body is None
    assert wire.failure_response(caught.value) is None


def test_malformed_request_with_a_top_level_error_code_is_answered() -> None:
    payload = struct.pack(">hhi", wire.ApiKey.Metadata, 13, 8) + b"\x00\x00" + b"\x00\x05"
    with pytest.raises(wire.MalformedRequest) as caught:
        wire.decode_request(payload)
    answer = wire.failure_response(caught.value)
    assert answer is not None
    decoded = decode_response(wire.ApiKey.Metadata, 13, answer)
    assert (decoded.error_code, decoded.topics, decoded.brokers) == (ErrorCode.INVALID_REQUEST, [], [])


# ---------------------------------------------------------------- real clients


async def test_kafka_python_retries_api_versions_after_the_fallback() -> None:
    capped = {**wire.SUPPORTED_APIS, wire.ApiKey.ApiVersions: (0, 2)}
    async with FakeBroker(apis=capped) as broker:
        topics = await asyncio.to_thread(kafka_python_list_topics, broker.bootstrap)
    assert topics == ["golden"]
    first = api_versions_seen(broker, connections(broker)[0])
    # v4 (its newest) is refused with the v0 fallback, then it asks again with our max.
    assert first == [4, 2]


async def test_librdkafka_retries_api_versions_after_the_fallback() -> None:
    capped = {**wire.SUPPORTED_APIS, wire.ApiKey.ApiVersions: (0, 2)}
    async with FakeBroker(apis=capped) as broker:
        topics = await asyncio.to_thread(confluent_list_topics, broker.bootstrap)
    assert topics == ["golden"]
    first = api_versions_seen(broker, connections(broker)[0])
    # librdkafka sends its newest (v3), then falls back to v0 as Kafka intends.
    assert first[0] == 3
    assert len(first) == 2 and first[1] <= 2


def connections(broker: FakeBroker) -> list[int]:
    return sorted({r.connection for r in broker.requests})


def api_versions_seen(broker: FakeBroker, connection: int) -> list[int]:
    return [
        struct.unpack_from(">h", r.payload, 2)[0]
        for r in broker.requests
        if r.connection == connection and struct.unpack_from(">h", r.payload)[0] == wire.ApiKey.ApiVersions
    ]


# ---------------------------------------------------------------- error responses for every API

SAMPLE_TOPIC_ID = uuid.UUID("00000000-0000-4000-8000-000000000abc")
SAMPLE_BY_IDENTITY = {
    "topicName": "t",
    "groupId": "g",
    "transactionalId": "tx",
    "TopicId": SAMPLE_TOPIC_ID,
    "Partition": 3,
    "PartitionIndex": 3,
    "PartitionIndexes": 3,
    "Index": 3,
    "MemberId": "m",
    "GroupInstanceId": "gi",
    "ResourceType": 2,
    "ResourceName": "r",
    "Key": "k",
    "CoordinatorKeys": "k",
}


def sample_value(field: Any) -> Any:
    spec = field._json
    if spec.get("entityType") in SAMPLE_BY_IDENTITY:
        return SAMPLE_BY_IDENTITY[spec["entityType"]]
    return SAMPLE_BY_IDENTITY.get(spec["name"])


def sample_fields(node: Any, version: int) -> dict[str, Any]:
    """One entry in every array, identities set to the sample values, everything else default."""
    values: dict[str, Any] = {}
    for field in node.fields.values():
        if not field.for_version_q(version):
            continue
        if field.is_struct_array():
            values[field.name] = [field.data_class(version=version, **sample_fields(field, version))]
        elif field.is_struct():
            if not field.tagged_field_q(version):
                values[field.name] = field.data_class(version=version, **sample_fields(field, version))
        elif field.is_array():
            item = sample_value(field)
            if item is not None:
                values[field.name] = [item]
        else:
            item = sample_value(field)
            if item is not None:
                values[field.name] = item
    return values


def sample_request(api_key: int, version: int) -> bytes:
    versioned = wire.request_class(api_key, version)
    return request_bytes(versioned(**sample_fields(versioned._struct, version)))


def walk(obj: Any, node: Any, version: int, path: str = "") -> Any:
    """Yield (path, field, value) for every field present at ``version``, depth first."""
    for field in node.fields.values():
        if not field.for_version_q(version):
            continue
        value = getattr(obj, field.name)
        yield path + field.name, field, value
        if field.is_struct_array() and value:
            for item in value:
                yield from walk(item, field, version, path + field.name + ".")
        elif field.is_struct() and value is not None:
            yield from walk(value, field, version, path + field.name + ".")


def error_codes(decoded: Any, api_key: int, version: int) -> list[int]:
    return [v for _, f, v in walk(decoded, response_cls(api_key)._struct, version) if f.name == "error_code"]


# Arrays that must answer the sample request entry for entry (checked where present).
ECHOED = {
    wire.ApiKey.Produce: ["responses", "responses.partition_responses"],
    wire.ApiKey.Fetch: ["responses", "responses.partitions"],
    wire.ApiKey.ListOffsets: ["topics", "topics.partitions"],
    wire.ApiKey.Metadata: ["topics"],
    wire.ApiKey.OffsetCommit: ["topics", "topics.partitions"],
    wire.ApiKey.OffsetFetch: ["topics", "topics.partitions", "groups", "groups.topics", "groups.topics.partitions"],
    wire.ApiKey.FindCoordinator: ["coordinators"],
    wire.ApiKey.LeaveGroup: ["members"],
    wire.ApiKey.DescribeGroups: ["groups"],
    wire.ApiKey.CreateTopics: ["topics"],
    wire.ApiKey.DeleteTopics: ["responses"],
    wire.ApiKey.DescribeConfigs: ["results"],
    wire.ApiKey.CreatePartitions: ["results"],
    wire.ApiKey.DeleteGroups: ["results"],
    wire.ApiKey.IncrementalAlterConfigs: ["responses"],
    wire.ApiKey.OffsetDelete: ["topics", "topics.partitions"],
}

ALL_VERSIONS = [
    pytest.param(k, v, id=f"{wire.ApiKey(k).name}-v{v}")
    for k, (lo, hi) in sorted(wire.SUPPORTED_APIS.items())
    for v in range(lo, hi + 1)
]


@pytest.mark.parametrize(("api_key", "version"), ALL_VERSIONS)
def test_error_response_for_every_supported_api_version(api_key: int, version: int) -> None:
    request = wire.decode_request(sample_request(api_key, version))
    framed = wire.error_response(request, CODE, message="storage is down")
    if api_key == wire.ApiKey.ApiVersions:
        decoded = api_versions_response(version).decode(framed[4:], header=True)
        assert decoded.error_code == CODE and decoded.api_keys
        return
    decoded = decode_response(api_key, version, framed)
    assert decoded.header.correlation_id == 17
    fields = list(walk(decoded, response_cls(api_key)._struct, version))

    codes = [value for _, f, value in fields if f.name == "error_code"]
    assert codes and set(codes) == {CODE}
    messages = {value for _, f, value in fields if f.name == "error_message"}
    assert messages <= {"storage is down"}

    arrays = {path: value for path, f, value in fields if f.is_struct_array()}
    for path in ECHOED.get(api_key, []):
        if path.split(".")[0] in arrays:
            assert arrays.get(path), f"{path} should echo the request"
    for path, value in arrays.items():
        # Nothing is invented: an array either answers the one sample entry or is empty.
        assert value is None or len(value) <= 1, path
    for path, field, value in fields:
        if "." not in path or field.is_array():
            continue
        expected = sample_value(field)
        if expected is not None and value is not None:
            assert value == expected, path
        if field._json["type"] == "records":
            assert value == b"", path


@pytest.mark.parametrize(("api_key", "version"), ALL_VERSIONS)
def test_error_response_without_a_decoded_body(api_key: int, version: int) -> None:
    request = wire.DecodedRequest(api_key, version, 5, None, wire.request_header_version(api_key, version), None)
    framed = wire.error_response(request, ErrorCode.INVALID_REQUEST)
    if api_key == wire.ApiKey.ApiVersions:
        decoded = api_versions_response(0).decode(framed[4:], header=True)
        assert decoded.error_code == ErrorCode.INVALID_REQUEST
        return
    decoded = decode_response(api_key, version, framed)
    assert decoded.header.correlation_id == 5
    assert set(error_codes(decoded, api_key, version)) <= {ErrorCode.INVALID_REQUEST}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    api_key=st.sampled_from(sorted(wire.SUPPORTED_APIS)),
    version=st.integers(min_value=-1, max_value=20),
    tail=st.binary(max_size=64),
)
def test_arbitrary_bytes_never_escape_the_failure_taxonomy(api_key: int, version: int, tail: bytes) -> None:
    payload = struct.pack(">hhi", api_key, version, 1) + tail
    try:
        request = wire.decode_request(payload)
    except wire.RequestError as exc:
        answer = wire.failure_response(exc)
        assert answer is None or struct.unpack_from(">ii", answer)[1] == 1
    else:
        framed = wire.error_response(request, CODE)
        assert decode_response(api_key, version, framed).header.correlation_id == 1


# ---------------------------------------------------------------- encode_response


def test_response_header_bytes_follow_the_header_version_rules() -> None:
    heartbeat = {v: wire.DecodedRequest(wire.ApiKey.Heartbeat, v, 7, "c", 1, None) for v in (3, 4)}
    v3 = wire.encode_response(heartbeat[3], wire.make_response(heartbeat[3], error_code=27))
    v4 = wire.encode_response(heartbeat[4], wire.make_response(heartbeat[4], error_code=27))
    # v3: size, correlation id, throttle, error.  v4 adds an empty tag section
    # after the correlation id (header v1) and at the end of the body.
    assert v3 == struct.pack(">iiih", 10, 7, 0, 27)
    assert v4 == struct.pack(">iiBihB", 12, 7, 0, 0, 27, 0)

    api_versions = wire.DecodedRequest(wire.ApiKey.ApiVersions, 3, 7, "c", 2, None)
    framed = wire.encode_response(api_versions, wire.api_versions_body(3))
    # Flexible body, but header v0: the error code follows the correlation id directly.
    assert struct.unpack_from(">iih", framed) == (len(framed) - 4, 7, 0)


def test_encode_response_refuses_a_body_for_another_api_or_version() -> None:
    request = wire.DecodedRequest(wire.ApiKey.Heartbeat, 4, 7, "c", 2, None)
    with pytest.raises(storage_errors.Internal, match="another api"):
        wire.encode_response(request, wire.response_class(wire.ApiKey.SyncGroup, 4)())
    with pytest.raises(storage_errors.Internal, match="response_version=3"):
        wire.encode_response(request, wire.response_class(wire.ApiKey.Heartbeat, 3)())


def test_encode_response_versions_an_unversioned_body() -> None:
    request = wire.DecodedRequest(wire.ApiKey.Heartbeat, 4, 7, "c", 2, None)
    body = response_cls(wire.ApiKey.Heartbeat)(error_code=25)
    assert decode_response(wire.ApiKey.Heartbeat, 4, wire.encode_response(request, body)).error_code == 25


def test_make_response_converts_nested_dicts() -> None:
    request = wire.DecodedRequest(wire.ApiKey.Produce, 9, 7, "c", 2, None)
    partition_cls = wire.nested_class(wire.response_class(wire.ApiKey.Produce, 9), "responses", "partition_responses")
    body = wire.make_response(
        request,
        responses=[{"name": "t", "partition_responses": [{"index": 1, "base_offset": 42}, partition_cls(index=2)]}],
    )
    decoded = decode_response(wire.ApiKey.Produce, 9, wire.encode_response(request, body))
    partitions = decoded.responses[0].partition_responses
    assert [(p.index, p.base_offset) for p in partitions] == [(1, 42), (2, 0)]


def test_make_response_rejects_unknown_fields() -> None:
    request = wire.DecodedRequest(wire.ApiKey.Heartbeat, 4, 7, "c", 2, None)
    with pytest.raises(ValueError, match="no_such_field"):
        wire.make_response(request, no_such_field=1)


def test_nested_class_names_a_path_of_struct_fields() -> None:
    cls = wire.response_class(wire.ApiKey.Fetch, 12)
    assert wire.nested_class(cls, "responses", "partitions").__name__ == "PartitionData"
    with pytest.raises(storage_errors.Internal, match="field=throttle_time_ms"):
        wire.nested_class(cls, "throttle_time_ms")
    with pytest.raises(storage_errors.Internal, match="field=nope"):
        wire.nested_class(cls, "responses", "nope")


# ---------------------------------------------------------------- error codes

# kafka-python spells a few codes differently from Kafka's Errors enum.
KAFKA_PYTHON_NAMES = {
    "NONE": "NO_ERROR",
    "UNKNOWN_SERVER_ERROR": "UNKNOWN",
    "NOT_LEADER_OR_FOLLOWER": "NOT_LEADER_FOR_PARTITION",
    "MESSAGE_TOO_LARGE": "MESSAGE_SIZE_TOO_LARGE",
    "INVALID_TOPIC_EXCEPTION": "INVALID_TOPIC",
    "INVALID_REPLICA_ASSIGNMENT": "INVALID_REPLICATION_ASSIGNMENT",
}


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_error_code_numbers_match_kafka_python(code: ErrorCode) -> None:
    import kafka.errors as kafka_errors

    known = kafka_errors.for_code(int(code))
    assert known.errno == int(code)
    assert known.message == KAFKA_PYTHON_NAMES.get(code.name, code.name)


def test_storage_error_codes_agree_with_the_table() -> None:
    names = (
        "UNKNOWN_SERVER_ERROR",
        "CORRUPT_MESSAGE",
        "UNKNOWN_TOPIC_OR_PARTITION",
        "NOT_LEADER_OR_FOLLOWER",
        "REQUEST_TIMED_OUT",
        "KAFKA_STORAGE_ERROR",
        "INVALID_REQUEST",
        "TOPIC_ALREADY_EXISTS",
    )
    for name in names:
        assert getattr(storage_errors, name) == ErrorCode[name]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (storage_errors.NotFound("no such topic", topic="t"), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        (storage_errors.Fenced("lease lost"), ErrorCode.NOT_LEADER_OR_FOLLOWER),
        (storage_errors.AlreadyExists("taken"), ErrorCode.TOPIC_ALREADY_EXISTS),
        (storage_errors.Unavailable("s3 slow down"), ErrorCode.KAFKA_STORAGE_ERROR),
        (storage_errors.Ambiguous("timeout after send"), ErrorCode.KAFKA_STORAGE_ERROR),
        (storage_errors.InvalidRequest("bad"), ErrorCode.INVALID_REQUEST),
        (storage_errors.CorruptData("crc"), ErrorCode.CORRUPT_MESSAGE),
        (storage_errors.Internal("bug"), ErrorCode.UNKNOWN_SERVER_ERROR),
        (storage_errors.Conflict("lost race"), ErrorCode.UNKNOWN_SERVER_ERROR),
        (ValueError("library bug"), ErrorCode.UNKNOWN_SERVER_ERROR),
        (KeyboardInterrupt(), ErrorCode.UNKNOWN_SERVER_ERROR),
    ],
    ids=lambda v: type(v).__name__,
)
def test_code_for_maps_storage_errors(exc: BaseException, expected: int) -> None:
    assert code_for(exc) == expected


def test_code_for_wire_errors() -> None:
    ids = {"api_key": 0, "api_version": 1, "correlation_id": 2}
    assert code_for(wire.UnsupportedVersion("x", **ids)) == ErrorCode.UNSUPPORTED_VERSION
    assert code_for(wire.MalformedRequest("x", **ids)) == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(("attr", "expected"), [(120, 120), ("3", -1), (True, -1), (40000, -1), (None, -1)])
def test_code_for_tolerates_odd_kafka_code_attributes(attr: object, expected: int) -> None:
    class Odd(Exception):
        kafka_code = attr

    assert code_for(Odd()) == expected
