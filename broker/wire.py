"""The Kafka wire codec: the one module that owns tidelog's use of ``kafka.protocol``.

kafka-python 3.x compiles every request and response version from Kafka's own
JSON schemas and decodes as well as encodes, so tidelog never hand-writes a
protocol struct.  What this module owns on top of it:

* the table of APIs and versions we implement (``SUPPORTED_APIS``) and the
  ApiVersions answer built from it, including the v0 fallback clients rely on
  when they open with a newer ApiVersions than we speak;
* request header parsing (we read api key, version and correlation id
  ourselves, so even a request we cannot decode can be answered);
* response header versions (flexible versions use header v1, except
  ApiVersions, whose response header is always v0);
* the failure taxonomy: ``UnanswerableRequest`` (close the connection),
  ``UnsupportedVersion`` and ``MalformedRequest`` (answer with an error);
* ``error_response``: a schema-driven error answer for any supported API.

Invariants:

* No I/O (an import-linter contract forbids asyncio and socket here).
* A body that needs more bytes than the payload has is a ``MalformedRequest``.
  kafka-python's generated decoders slice past the end of a buffer without
  complaint, so the final position check is what detects truncation.  (One
  case it cannot see: a cut inside an *unknown* tagged field of the outermost
  struct, whose bytes we would ignore anyway.)  Trailing bytes after a
  complete body are ignored, exactly as Kafka's own parser ignores them.
* Every well-framed request of at least eight bytes gets an answer, except
  when no answer could say what went wrong: an API key we do not implement, a
  version kafka-python's schemas cannot encode, or an undecodable body whose
  response has nowhere to put an error (see ``failure_response``).  Kafka
  closes the connection in those cases too.
"""

from __future__ import annotations

import dataclasses
import struct
import warnings
from collections.abc import Mapping
from typing import Any

# kafka-python reads its schemas with importlib.resources.read_text (and open_text), deprecated
# on Python 3.11 (and undeprecated again in 3.13).  The schemas are read once, at
# import; silence exactly that warning here so a broker or test run with
# warnings-as-errors can import the codec.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated", category=DeprecationWarning)
    from kafka.protocol.admin import (
        CreatePartitionsRequest,
        CreatePartitionsResponse,
        CreateTopicsRequest,
        CreateTopicsResponse,
        DeleteGroupsRequest,
        DeleteGroupsResponse,
        DeleteTopicsRequest,
        DeleteTopicsResponse,
        DescribeClusterRequest,
        DescribeClusterResponse,
        DescribeConfigsRequest,
        DescribeConfigsResponse,
        DescribeGroupsRequest,
        DescribeGroupsResponse,
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
        ListGroupsRequest,
        ListGroupsResponse,
    )
    from kafka.protocol.api_key import ApiKey
    from kafka.protocol.consumer import (
        FetchRequest,
        FetchResponse,
        HeartbeatRequest,
        HeartbeatResponse,
        JoinGroupRequest,
        JoinGroupResponse,
        LeaveGroupRequest,
        LeaveGroupResponse,
        ListOffsetsRequest,
        ListOffsetsResponse,
        OffsetCommitRequest,
        OffsetCommitResponse,
        OffsetDeleteRequest,
        OffsetDeleteResponse,
        OffsetFetchRequest,
        OffsetFetchResponse,
        SyncGroupRequest,
        SyncGroupResponse,
    )
    from kafka.protocol.metadata import (
        ApiVersionsRequest,
        ApiVersionsResponse,
        FindCoordinatorRequest,
        FindCoordinatorResponse,
        MetadataRequest,
        MetadataResponse,
    )
    from kafka.protocol.producer import (
        InitProducerIdRequest,
        InitProducerIdResponse,
        ProduceRequest,
        ProduceResponse,
    )

from tidelog.broker.errors import ErrorCode
from tidelog.broker.framing import FrameError
from tidelog.storage.errors import Internal, InvalidRequest

__all__ = [
    "ADVERTISED_MIN_OVERRIDES",
    "SUPPORTED_APIS",
    "ApiKey",
    "DecodedRequest",
    "MalformedRequest",
    "RequestError",
    "UnanswerableRequest",
    "UnsupportedVersion",
    "advertised_apis",
    "api_versions_body",
    "decode_request",
    "encode_api_versions_fallback",
    "encode_response",
    "error_response",
    "failure_response",
    "make_response",
    "nested_class",
    "request_class",
    "request_header_version",
    "response_class",
    "response_header_version",
]

# --------------------------------------------------------------------------
# The API table.  One place, data only.  Why each range is what it is:
#
# * Minimums never go below the schema's own floor: Kafka 4 removed old
#   versions (Produce 0-2, Fetch 0-3, ListOffsets 0, OffsetCommit 0-1,
#   OffsetFetch 0, DescribeConfigs 0, CreateTopics 0-1, DeleteTopics 0) and the
#   bundled JSON no longer describes them faithfully.
# * Maximums cover what the clients we test negotiate (shared/FACTS.md):
#   kafka-python 3.0.12 opens with ApiVersions v4 and uses Metadata v13,
#   OffsetCommit/OffsetFetch v8; librdkafka 2.16 uses Produce v10, Fetch v16
#   (topic IDs), OffsetCommit/OffsetFetch v9.  Each widening is free at the
#   wire level: ApiVersions v4 == v3 for a broker without features; Produce
#   v10 == v9 plus optional tagged leader hints; OffsetCommit v9 == v8;
#   OffsetFetch v9 adds a nullable member id/epoch used only by KIP-848 groups.
# * ListOffsets stops at 7: v8+ only add tiered-storage timestamps (-4/-5/-6).
#   FindCoordinator stops at 4: v5/v6 are transactions v2 and share groups.
#   JoinGroup stops at 7: v8 adds a Reason field we would have to log.
# --------------------------------------------------------------------------
SUPPORTED_APIS: dict[int, tuple[int, int]] = {
    ApiKey.Produce: (3, 10),
    ApiKey.Fetch: (4, 16),
    ApiKey.ListOffsets: (1, 7),
    ApiKey.Metadata: (0, 13),
    ApiKey.OffsetCommit: (2, 9),
    ApiKey.OffsetFetch: (1, 9),
    ApiKey.FindCoordinator: (0, 4),
    ApiKey.JoinGroup: (0, 7),
    ApiKey.Heartbeat: (0, 4),
    ApiKey.LeaveGroup: (0, 5),
    ApiKey.SyncGroup: (0, 5),
    ApiKey.DescribeGroups: (0, 5),
    ApiKey.ListGroups: (0, 4),
    ApiKey.ApiVersions: (0, 4),
    ApiKey.CreateTopics: (2, 7),
    ApiKey.DeleteTopics: (1, 6),
    ApiKey.InitProducerId: (0, 4),
    ApiKey.DescribeConfigs: (1, 4),
    ApiKey.CreatePartitions: (0, 3),
    ApiKey.DeleteGroups: (0, 2),
    ApiKey.IncrementalAlterConfigs: (0, 1),
    ApiKey.OffsetDelete: (0, 0),
    ApiKey.DescribeCluster: (0, 1),
}

# Versions we list in ApiVersions below the supported minimum, and answer with
# UNSUPPORTED_VERSION if a client ever sends them.  librdkafka <= 2.11 (kcat in
# Debian ships 2.0.2) silently disables gzip, snappy and lz4 unless the
# broker's Produce range starts at 0 (KAFKA-18659); Kafka 4 does the same.
ADVERTISED_MIN_OVERRIDES: dict[int, int] = {ApiKey.Produce: 0}

_MESSAGES: dict[int, tuple[Any, Any]] = {
    ApiKey.Produce: (ProduceRequest, ProduceResponse),
    ApiKey.Fetch: (FetchRequest, FetchResponse),
    ApiKey.ListOffsets: (ListOffsetsRequest, ListOffsetsResponse),
    ApiKey.Metadata: (MetadataRequest, MetadataResponse),
    ApiKey.OffsetCommit: (OffsetCommitRequest, OffsetCommitResponse),
    ApiKey.OffsetFetch: (OffsetFetchRequest, OffsetFetchResponse),
    ApiKey.FindCoordinator: (FindCoordinatorRequest, FindCoordinatorResponse),
    ApiKey.JoinGroup: (JoinGroupRequest, JoinGroupResponse),
    ApiKey.Heartbeat: (HeartbeatRequest, HeartbeatResponse),
    ApiKey.LeaveGroup: (LeaveGroupRequest, LeaveGroupResponse),
    ApiKey.SyncGroup: (SyncGroupRequest, SyncGroupResponse),
    ApiKey.DescribeGroups: (DescribeGroupsRequest, DescribeGroupsResponse),
    ApiKey.ListGroups: (ListGroupsRequest, ListGroupsResponse),
    ApiKey.ApiVersions: (ApiVersionsRequest, ApiVersionsResponse),
    ApiKey.CreateTopics: (CreateTopicsRequest, CreateTopicsResponse),
    ApiKey.DeleteTopics: (DeleteTopicsRequest, DeleteTopicsResponse),
    ApiKey.InitProducerId: (InitProducerIdRequest, InitProducerIdResponse),
    ApiKey.DescribeConfigs: (DescribeConfigsRequest, DescribeConfigsResponse),
    ApiKey.CreatePartitions: (CreatePartitionsRequest, CreatePartitionsResponse),
    ApiKey.DeleteGroups: (DeleteGroupsRequest, DeleteGroupsResponse),
    ApiKey.IncrementalAlterConfigs: (IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse),
    ApiKey.OffsetDelete: (OffsetDeleteRequest, OffsetDeleteResponse),
    ApiKey.DescribeCluster: (DescribeClusterRequest, DescribeClusterResponse),
}

_HEADER_START = struct.Struct(">hhi")
_INT16 = struct.Struct(">h")
_MIN_REQUEST = _HEADER_START.size


def advertised_apis(apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS) -> dict[int, tuple[int, int]]:
    """The ranges ApiVersions lists: ``apis`` with ``ADVERTISED_MIN_OVERRIDES`` applied."""
    out = {}
    for key, (lo, hi) in apis.items():
        out[key] = (min(lo, ADVERTISED_MIN_OVERRIDES.get(key, lo)), hi)
    return out


# --------------------------------------------------------------------------
# Decoded requests and the failure taxonomy
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedRequest:
    """A request whose header we parsed; ``body`` is kafka-python's request object.

    ``body`` is None only on the request carried by a ``RequestError`` whose
    body could not be decoded; handlers always receive a decoded body.
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int
    body: Any

    @property
    def flexible(self) -> bool:
        return self.header_version >= 2

    @property
    def response_header_version(self) -> int:
        return response_header_version(self.api_key, self.api_version)


class UnanswerableRequest(FrameError):
    """The payload is too short to hold a request header: there is no correlation id to answer."""


class RequestError(InvalidRequest):
    """A framed request we could not hand to a handler, but whose header we read.

    ``request`` is what ``error_response`` needs to answer it (header fields,
    plus the body when it decoded); it is None when no response can be
    encoded for this api key and version.
    """

    def __init__(
        self,
        message: str,
        *,
        api_key: int,
        api_version: int,
        correlation_id: int,
        request: DecodedRequest | None = None,
    ) -> None:
        super().__init__(message, api_key=api_key, api_version=api_version, correlation_id=correlation_id)
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.request = request


class UnsupportedVersion(RequestError):
    """An api key we do not implement, or a version outside our range."""

    kafka_code = ErrorCode.UNSUPPORTED_VERSION


class MalformedRequest(RequestError):
    """The header or body does not decode at the version the header names."""

    kafka_code = ErrorCode.INVALID_REQUEST


# --------------------------------------------------------------------------
# Class lookup and header versions
# --------------------------------------------------------------------------


def _checked(api_key: int, version: int, apis: Mapping[int, tuple[int, int]]) -> tuple[Any, Any]:
    span = apis.get(api_key)
    if span is None:
        raise Internal("api is not supported", api_key=api_key)
    if not span[0] <= version <= span[1]:
        raise Internal("api version is not supported", api_key=api_key, api_version=version, supported=span)
    return _MESSAGES[api_key]


def request_class(api_key: int, version: int, *, apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS) -> Any:
    """kafka-python's request class for a supported api key and version, e.g. ``ProduceRequest[9]``."""
    return _checked(api_key, version, apis)[0][version]


def response_class(api_key: int, version: int, *, apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS) -> Any:
    """kafka-python's response class, e.g. ``ProduceResponse[9]``; nested structs are attributes of it."""
    return _checked(api_key, version, apis)[1][version]


def _flexible(api_key: int, version: int) -> bool:
    messages = _MESSAGES.get(api_key)
    if messages is None:
        raise Internal("api is not known to the codec", api_key=api_key)
    return bool(messages[0].flexible_version_q(version))


def request_header_version(api_key: int, version: int) -> int:
    """Request header v2 (tagged fields) for flexible versions, else v1."""
    return 2 if _flexible(api_key, version) else 1


def response_header_version(api_key: int, version: int) -> int:
    """Response header v1 (tagged fields) for flexible versions, else v0.

    ApiVersions is the exception: its response header is always v0, because a
    client that sent an ApiVersions version the broker does not speak must
    still be able to read the answer (KIP-511).
    """
    if api_key == ApiKey.ApiVersions:
        return 0
    return 1 if _flexible(api_key, version) else 0


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _read_uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 35, 7):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ValueError("unsigned varint longer than five bytes")


def _parse_header_tail(buf: memoryview, flexible: bool) -> tuple[str | None, int]:
    """Client id (a classic nullable string even in header v2) and header tagged fields."""
    (length,) = _INT16.unpack_from(buf, _MIN_REQUEST)
    pos = _MIN_REQUEST + 2
    client_id = None
    if length >= 0:
        if pos + length > len(buf):
            raise ValueError("client id runs past the end of the request")
        # Java decodes client ids leniently too; it is only used for logging.
        client_id = str(buf[pos : pos + length], "utf-8", "replace")
        pos += length
    elif length != -1:
        raise ValueError(f"invalid client id length {length}")
    if flexible:
        count, pos = _read_uvarint(buf, pos)
        for _ in range(count):
            _tag, pos = _read_uvarint(buf, pos)
            size, pos = _read_uvarint(buf, pos)
            pos += size
        if pos > len(buf):
            raise ValueError("header tagged fields run past the end of the request")
    return client_id, pos


def _decode_body(request_cls: Any, version: int, flexible: bool, buf: memoryview, pos: int) -> Any:
    # The same three steps as ApiMessage.decode, which however throws away the
    # end position we need to detect truncation.
    decode = request_cls._struct.compiled_decode_from(
        version, compact=flexible, tagged=flexible, data_class=request_cls[None]
    )
    body, end = decode(buf, pos)
    if end > len(buf):
        raise ValueError(f"body truncated: needs {end - pos} bytes, has {len(buf) - pos}")
    # Trailing bytes are ignored, as Kafka ignores them: librdkafka's
    # all-topics Metadata request carries three (kcat -L, list_topics()).
    return body


def _schema_versions(api_key: int) -> tuple[int, int]:
    lo, hi = _MESSAGES[api_key][0].valid_versions
    return int(lo), int(hi)


def _can_answer(api_key: int, version: int, apis: Mapping[int, tuple[int, int]]) -> bool:
    """Whether kafka-python's schema can describe this version faithfully enough to answer it."""
    if api_key not in _MESSAGES:
        return False
    lo, hi = _schema_versions(api_key)
    adv = advertised_apis(apis).get(api_key)
    if adv is not None and adv[0] <= version <= adv[1]:
        lo = min(lo, adv[0])
    return 0 <= lo <= version <= hi


def decode_request(
    payload: bytes | bytearray | memoryview,
    *,
    apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS,
) -> DecodedRequest:
    """Decode one framed request payload (without its size prefix).

    Raises ``UnanswerableRequest`` (shorter than 8 bytes), ``UnsupportedVersion``
    or ``MalformedRequest``; the latter two carry what ``failure_response``
    needs to answer.
    """
    buf = memoryview(payload)
    if len(buf) < _MIN_REQUEST:
        raise UnanswerableRequest("request shorter than its header", size=len(buf))
    api_key, api_version, correlation_id = _HEADER_START.unpack_from(buf, 0)
    ids = {"api_key": api_key, "api_version": api_version, "correlation_id": correlation_id}
    span = apis.get(api_key)
    if span is None or not span[0] <= api_version <= span[1]:
        request = None
        if api_key != ApiKey.ApiVersions and _can_answer(api_key, api_version, apis):
            request = _best_effort_decode(buf, api_key, api_version, correlation_id)
        message = "unsupported api" if span is None else "unsupported api version"
        raise UnsupportedVersion(message, request=request, **ids)

    request_cls = _MESSAGES[api_key][0]
    flexible = bool(request_cls.flexible_version_q(api_version))
    header_version = 2 if flexible else 1
    try:
        client_id, pos = _parse_header_tail(buf, flexible)
    except (struct.error, IndexError, ValueError) as exc:
        stub = DecodedRequest(api_key, api_version, correlation_id, None, header_version, None)
        raise MalformedRequest("request header does not decode", request=stub, **ids) from exc
    try:
        body = _decode_body(request_cls, api_version, flexible, buf, pos)
    except Exception as exc:
        # Generated decoders fail with struct.error, IndexError, ValueError,
        # UnicodeDecodeError, ...: any exception here means the bytes do not
        # match the schema, never a fault of ours worth crashing for.
        stub = DecodedRequest(api_key, api_version, correlation_id, client_id, header_version, None)
        raise MalformedRequest("request body does not decode", request=stub, **ids) from exc
    return DecodedRequest(api_key, api_version, correlation_id, client_id, header_version, body)


def _best_effort_decode(buf: memoryview, api_key: int, api_version: int, correlation_id: int) -> DecodedRequest:
    """Decode a request we will refuse, so the refusal can name its topics and partitions."""
    request_cls = _MESSAGES[api_key][0]
    flexible = bool(request_cls.flexible_version_q(api_version))
    header_version = 2 if flexible else 1
    client_id = None
    body = None
    try:
        client_id, pos = _parse_header_tail(buf, flexible)
        body = _decode_body(request_cls, api_version, flexible, buf, pos)
    except Exception:  # noqa: BLE001 -- the refusal is answered either way, just without echoes
        pass
    return DecodedRequest(api_key, api_version, correlation_id, client_id, header_version, body)


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def encode_response(request: DecodedRequest, response_body: Any) -> bytes:
    """Frame ``response_body`` (built as ``response_class(k, v)(...)``) as the answer to ``request``.

    The output is ``int32 size`` + response header (v0, or v1 for flexible
    versions other than ApiVersions) + body.
    """
    if response_body.API_KEY != request.api_key:
        raise Internal("response is for another api", api_key=request.api_key, response_api_key=response_body.API_KEY)
    if response_body.API_VERSION is None:
        response_body.API_VERSION = request.api_version
    elif response_body.API_VERSION != request.api_version:
        raise Internal(
            "response version differs from request version",
            api_key=request.api_key,
            api_version=request.api_version,
            response_version=response_body.API_VERSION,
        )
    response_body.with_header(request.correlation_id)
    return bytes(response_body.encode(header=True, framed=True))


def api_versions_body(
    version: int,
    *,
    error_code: int = ErrorCode.NONE,
    throttle_time_ms: int = 0,
    apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS,
) -> Any:
    """The ApiVersions response body listing ``advertised_apis(apis)``, sorted by api key."""
    cls = ApiVersionsResponse[version]
    entry = nested_class(cls, "api_keys")
    keys = [
        entry(api_key=int(key), min_version=lo, max_version=hi)
        for key, (lo, hi) in sorted(advertised_apis(apis).items())
    ]
    return cls(error_code=int(error_code), api_keys=keys, throttle_time_ms=throttle_time_ms)


def encode_api_versions_fallback(
    correlation_id: int,
    *,
    error_code: int = ErrorCode.UNSUPPORTED_VERSION,
    apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS,
) -> bytes:
    """An ApiVersions v0 answer (header v0, body v0) carrying ``error_code`` and our ranges.

    Clients open with the newest ApiVersions they know.  When that is newer
    than ours they cannot know our body layout, so Kafka answers with v0 and
    UNSUPPORTED_VERSION; kafka-python and librdkafka then retry with the
    highest ApiVersions version listed.  Any other ApiVersions error uses the
    same shape, because kafka-python reads every failed ApiVersions response
    as v0.
    """
    body = api_versions_body(0, error_code=error_code, apis=apis)
    body.with_header(correlation_id)
    return bytes(body.encode(header=True, framed=True))


def failure_response(exc: RequestError, *, apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS) -> bytes | None:
    """The answer to a request ``decode_request`` refused, or None when the connection must close.

    ApiVersions always gets the v0 fallback.  Otherwise the answer is
    ``error_response`` with the exception's code.  There is no answer -- and
    the caller closes the connection, as Kafka does -- when the api key or
    version is one no schema can encode, or when the body did not decode and
    the response has no top-level error code at this version (Produce,
    Metadata before v13, ...): with no request entries to echo, such a
    response would carry no error at all and read as an empty success.
    """
    if exc.api_key == ApiKey.ApiVersions:
        return encode_api_versions_fallback(exc.correlation_id, error_code=exc.kafka_code, apis=apis)
    request = exc.request
    if request is None:
        return None
    if request.body is None and not _has_top_level_error(request.api_key, request.api_version):
        return None
    return error_response(request, exc.kafka_code, apis=apis)


def _has_top_level_error(api_key: int, version: int) -> bool:
    field = _MESSAGES[api_key][1]._struct.fields.get("error_code")
    return field is not None and field.for_version_q(version)


# --------------------------------------------------------------------------
# Building responses
# --------------------------------------------------------------------------


def nested_class(message_cls: Any, *path: str) -> Any:
    """The class of the struct reached from ``message_cls`` through field names.

    ``nested_class(ProduceResponse[9], "responses", "partition_responses")``
    is the per-partition struct; handlers know field names, not the schema's
    struct type names.
    """
    node = message_cls._struct
    for name in path:
        field = node.fields.get(name)
        if field is None or not (field.is_struct() or field.is_struct_array()):
            raise Internal("no struct field on path", struct=message_cls.__name__, field=name)
        node = field
    return node.data_class


def make_response(request: DecodedRequest, **fields: Any) -> Any:
    """A response body for ``request`` from keyword fields; nested structs may be plain dicts.

    ``make_response(req, responses=[{"name": "t", "partition_responses": [{"index": 0}]}])``
    -- unnamed fields take their schema defaults, unknown names raise.
    """
    response_cls = _MESSAGES[request.api_key][1]
    version = request.api_version
    return response_cls[version](**_convert(response_cls._struct, version, fields))


def _convert(node: Any, version: int, values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn dicts nested in ``values`` into the struct classes of ``node``'s fields."""
    out = {}
    for name, value in values.items():
        field = node.fields.get(name)
        if field is not None and field.is_struct_array() and isinstance(value, list):
            value = [_struct_of(field, version, v) if isinstance(v, Mapping) else v for v in value]
        elif field is not None and field.is_struct() and isinstance(value, Mapping):
            value = _struct_of(field, version, value)
        out[name] = value
    return out


def _struct_of(field: Any, version: int, values: Mapping[str, Any]) -> Any:
    return field.data_class(version=version, **_convert(field, version, values))


# Request/response fields that identify the entity an entry is about.  Names
# differ between request and response (Fetch's Partition vs PartitionIndex),
# so each maps to a common identity; topic and group names carry an
# ``entityType`` in the schema and need no entry.
_IDENTITY_BY_ENTITY = {"topicName": "topic", "groupId": "group", "transactionalId": "transactional_id"}
_IDENTITY_BY_NAME = {
    "TopicId": "topic_id",
    "Partition": "partition",
    "PartitionIndex": "partition",
    "PartitionIndexes": "partition",
    "Index": "partition",
    "MemberId": "member",
    "GroupInstanceId": "group_instance",
    "ResourceType": "resource_type",
    "ResourceName": "resource_name",
    "Key": "coordinator_key",
    "CoordinatorKeys": "coordinator_key",
}


def _identity(field: Any) -> str | None:
    spec = field._json
    by_entity = _IDENTITY_BY_ENTITY.get(spec.get("entityType", ""))
    return by_entity if by_entity is not None else _IDENTITY_BY_NAME.get(spec["name"])


def _live(node: Any, version: int) -> list[Any]:
    return [f for f in node.fields.values() if f.for_version_q(version)]


def _has_error_code(node: Any, version: int) -> bool:
    for field in _live(node, version):
        if field.name == "error_code":
            return True
        if field.is_struct_array() and _has_error_code(field, version):
            return True
    return False


def _mirror_source(target: Any, source_node: Any, version: int) -> Any:
    """The request array whose entries the response array ``target`` answers one for one.

    A response array mirrors a request array when both identify entries the
    same way (topic name or id, partition index, group id, ...) and the
    response entries carry an error code; ties go to the earlier request field
    (Fetch's ``topics`` over ``forgotten_topics_data``).
    """
    if source_node is None or not _has_error_code(target, version):
        return None
    wanted = {_identity(f) for f in _live(target, version) if not f.is_array()} - {None}
    best, best_score = None, 0
    for field in _live(source_node, version):
        if not field.is_array():
            continue
        if field.is_struct_array():
            have = {_identity(f) for f in _live(field, version) if not f.is_array()} - {None}
            score = len(wanted & have)
        else:
            score = 1 if _identity(field) in wanted else 0
        if score > best_score:
            best, best_score = field, score
    return best


# An error answer is planned once per (response struct, request struct,
# version) and the plan replayed per request: the schema walk is the slow part.
_SET_ERROR, _SET_MESSAGE, _EMPTY_RECORDS, _EMPTY_ARRAY, _ECHO, _STRUCT, _MIRROR = range(7)
_Plan = tuple[tuple[str, int, Any], ...]
# kafka-python's field objects define __eq__ without __hash__, so plans are
# keyed by their identity; the fields live as long as their message classes.
_PLANS: dict[tuple[int, int, int], _Plan] = {}


def _plan(node: Any, version: int, source_node: Any) -> _Plan:
    key = (id(node), id(source_node), version)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _make_plan(node, version, source_node)
    return plan


def _make_plan(node: Any, version: int, source_node: Any) -> _Plan:
    echo_from = {}
    if source_node is not None:
        for field in _live(source_node, version):
            ident = _identity(field)
            if ident is not None and not field.is_array():
                echo_from[ident] = field.name
    steps: list[tuple[str, int, Any]] = []
    for field in _live(node, version):
        name = field.name
        if name == "error_code":
            steps.append((name, _SET_ERROR, None))
        elif name == "error_message":
            steps.append((name, _SET_MESSAGE, None))
        elif field._json["type"] == "records":
            # librdkafka rejects a null record set; Kafka sends an empty one with errors.
            steps.append((name, _EMPTY_RECORDS, None))
        elif field.is_struct_array():
            source = _mirror_source(field, source_node, version)
            if source is None:
                steps.append((name, _EMPTY_ARRAY, None))
            elif source.is_struct_array():
                steps.append((name, _MIRROR, (source.name, field.data_class, _plan(field, version, source), None)))
            else:
                ident = _identity(source)
                target = next(f.name for f in _live(field, version) if not f.is_array() and _identity(f) == ident)
                steps.append((name, _MIRROR, (source.name, field.data_class, _plan(field, version, None), target)))
        elif field.is_struct() and not field.tagged_field_q(version):
            steps.append((name, _STRUCT, (field.data_class, _plan(field, version, None))))
        elif not field.is_array() and _identity(field) in echo_from:
            steps.append((name, _ECHO, echo_from[_identity(field)]))
    return tuple(steps)


def _fill(plan: _Plan, version: int, code: int, message: str | None, source: Any) -> dict[str, Any]:
    """Field values for one struct: error fields set, identities echoed, mirrored arrays filled."""
    values: dict[str, Any] = {}
    for name, step, arg in plan:
        if step == _SET_ERROR:
            values[name] = code
        elif step == _SET_MESSAGE:
            if message is not None:
                values[name] = message
        elif step == _EMPTY_RECORDS:
            values[name] = b""
        elif step == _EMPTY_ARRAY:
            values[name] = []
        elif step == _ECHO:
            values[name] = getattr(source, arg)
        elif step == _STRUCT:
            cls, sub = arg
            values[name] = cls(version=version, **_fill(sub, version, code, message, None))
        else:  # _MIRROR
            source_name, cls, sub, target = arg
            entries = []
            for item in getattr(source, source_name) or ():
                if target is None:
                    fields = _fill(sub, version, code, message, item)
                else:
                    fields = _fill(sub, version, code, message, None)
                    fields[target] = item
                entries.append(cls(version=version, **fields))
            values[name] = entries
    return values


def error_response(
    request: DecodedRequest,
    error_code: int,
    *,
    message: str | None = None,
    apis: Mapping[int, tuple[int, int]] = SUPPORTED_APIS,
) -> bytes:
    """A framed answer to ``request`` in which every ``error_code`` field is ``error_code``.

    Built by walking the response schema at the request's version: arrays
    that answer a request array entry for entry (topics, partitions, groups,
    coordinator keys, config resources) echo the request's identities, so
    the client can attribute the error; arrays with no request counterpart
    are left empty and other fields take their schema defaults.  ``message``
    fills ``error_message`` fields.  ApiVersions answers with the v0 fallback
    shape, which is what clients parse for any ApiVersions error.
    """
    if request.api_key == ApiKey.ApiVersions:
        return encode_api_versions_fallback(request.correlation_id, error_code=error_code, apis=apis)
    request_cls, response_cls = _MESSAGES[request.api_key]
    version = request.api_version
    versioned = response_cls[version]
    source_node = request_cls._struct if request.body is not None else None
    plan = _plan(response_cls._struct, version, source_node)
    values = _fill(plan, version, int(error_code), message, request.body)
    return encode_response(request, versioned(**values))
