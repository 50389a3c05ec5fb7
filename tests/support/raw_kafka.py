"""A blocking Kafka protocol client over one raw socket, for requests no client library sends.

Fencing tests need OffsetCommit requests with generations and member ids a
well-behaved client would never use, and group members whose every step the
test controls.  Requests and responses are built and parsed with
kafka-python's schema-generated ``kafka.protocol`` classes (independent of the
broker's own codec use), and requests can be sent ahead of reading their
answers, because a JoinGroup answer only comes once every member has joined.
"""

from __future__ import annotations

import socket
import struct
import warnings
from collections import deque
from typing import Any

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated", category=DeprecationWarning)
    from kafka.protocol import consumer as _consumer
    from kafka.protocol import metadata as _metadata
    from kafka.protocol import admin as _admin

CONSUMER_PROTOCOL = "consumer"


def _response_class(request: Any) -> Any:
    name = type(request).__name__.split("_")[0].replace("Request", "Response")
    for module in (_consumer, _metadata, _admin):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(name)


class RawClient:
    def __init__(self, bootstrap: str, client_id: str = "raw-test", timeout: float = 30) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.client_id = client_id
        self._next_id = 0
        self._inflight: deque[tuple[int, Any, int]] = deque()

    def send(self, request: Any) -> int:
        self._next_id += 1
        request.with_header(correlation_id=self._next_id, client_id=self.client_id)
        self.sock.sendall(request.encode(header=True, framed=True))
        self._inflight.append((self._next_id, _response_class(request), request.API_VERSION))
        return self._next_id

    def receive(self) -> Any:
        """The answer to the oldest request sent and not yet received (Kafka answers in order)."""
        correlation_id, response_class, version = self._inflight.popleft()
        (size,) = struct.unpack(">i", self._read(4))
        payload = self._read(size)
        response = response_class[version].decode(payload, header=True)
        assert response.header.correlation_id == correlation_id, "answers out of order"
        return response

    def request(self, request: Any) -> Any:
        self.send(request)
        return self.receive()

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def subscription(topics: list[str]) -> bytes:
    """Consumer-protocol subscription metadata, version 0: topics and no user data."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def assignment(topic: str, partitions: list[int]) -> bytes:
    """Consumer-protocol assignment, version 0, for one topic."""
    out = struct.pack(">hi", 0, 1) + struct.pack(">h", len(topic)) + topic.encode()
    out += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    return out + struct.pack(">i", -1)


def join_request(group: str, member_id: str, topics: list[str], *, instance_id: str | None = None,
                 session_timeout_ms: int = 60000, rebalance_timeout_ms: int = 60000, version: int = 5) -> Any:
    R = _consumer.JoinGroupRequest
    return R[version](group_id=group, session_timeout_ms=session_timeout_ms, rebalance_timeout_ms=rebalance_timeout_ms,
                      member_id=member_id, group_instance_id=instance_id, protocol_type=CONSUMER_PROTOCOL,
                      protocols=[R.JoinGroupRequestProtocol(name="range", metadata=subscription(topics))])


def sync_request(group: str, generation: int, member_id: str, assignments: dict[str, bytes], *,
                 instance_id: str | None = None, version: int = 3) -> Any:
    R = _consumer.SyncGroupRequest
    return R[version](group_id=group, generation_id=generation, member_id=member_id, group_instance_id=instance_id,
                      assignments=[R.SyncGroupRequestAssignment(member_id=m, assignment=a)
                                   for m, a in assignments.items()])


def heartbeat_request(group: str, generation: int, member_id: str, *, instance_id: str | None = None,
                      version: int = 3) -> Any:
    return _consumer.HeartbeatRequest[version](group_id=group, generation_id=generation, member_id=member_id,
                                               group_instance_id=instance_id)


def commit_request(group: str, generation: int, member_id: str, offsets: dict[tuple[str, int], int], *,
                   instance_id: str | None = None, version: int = 8) -> Any:
    R = _consumer.OffsetCommitRequest
    T = R.OffsetCommitRequestTopic
    P = T.OffsetCommitRequestPartition
    by_topic: dict[str, list] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append(P(partition_index=partition, committed_offset=offset,
                                                committed_leader_epoch=-1, committed_metadata=""))
    return R[version](group_id=group, generation_id_or_member_epoch=generation, member_id=member_id,
                      group_instance_id=instance_id, retention_time_ms=-1,
                      topics=[T(name=t, partitions=ps) for t, ps in by_topic.items()])


def commit_errors(response: Any) -> set[int]:
    return {p.error_code for t in response.topics for p in t.partitions}


def fetch_request(groups: dict[str, list[tuple[str, int]] | None], version: int = 8) -> Any:
    R = _consumer.OffsetFetchRequest
    G = R.OffsetFetchRequestGroup
    T = G.OffsetFetchRequestTopics
    out = []
    for group, tps in groups.items():
        topics = None
        if tps is not None:
            by_topic: dict[str, list[int]] = {}
            for t, p in tps:
                by_topic.setdefault(t, []).append(p)
            topics = [T(name=t, partition_indexes=ps) for t, ps in by_topic.items()]
        out.append(G(group_id=group, topics=topics))
    return R[version](groups=out, require_stable=False)


def fetched(response: Any, group: str) -> dict[tuple[str, int], int]:
    g = next(g for g in response.groups if g.group_id == group)
    assert g.error_code == 0, g
    return {(t.name, p.partition_index): p.committed_offset for t in g.topics for p in t.partitions}
