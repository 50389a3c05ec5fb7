"""A raw Kafka connection for hand-built (and hand-broken) requests."""

from __future__ import annotations

import socket
import struct

from kafka.protocol.producer import ProduceRequest

from tidelog.storage.records import Record, build_batches

PRODUCE_V = 9


class Raw:
    """One TCP connection speaking hand-built Kafka frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.correlation = 0

    def send(self, body, correlation_id: int | None = None) -> int:
        self.correlation += 1
        cid = self.correlation if correlation_id is None else correlation_id
        body.with_header(cid, client_id="tidelog-e2e-raw")
        self.sock.sendall(bytes(body.encode(header=True, framed=True)))
        return cid

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes | None:
        """One response payload (without its size), or None if the broker closed the connection."""
        head = self._exactly(4)
        if head is None:
            return None
        (size,) = struct.unpack(">i", head)
        payload = self._exactly(size)
        assert payload is not None, "connection closed mid-response"
        return payload

    def _exactly(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def call(self, body, response_cls):
        cid = self.send(body)
        payload = self.recv()
        assert payload is not None, "broker closed the connection instead of answering"
        response = response_cls.decode(payload, header=True)
        assert response.header.correlation_id == cid
        return response

    def close(self) -> None:
        self.sock.close()


def produce_request(topic: str, partition: int | dict[int, bytes], records: bytes = b"", acks: int = -1,
                    version: int = PRODUCE_V):
    """A Produce request for one partition, or for several given as {partition: records}."""
    parts = partition if isinstance(partition, dict) else {partition: records}
    R = ProduceRequest[version]
    P = R.TopicProduceData.PartitionProduceData
    return R(transactional_id=None, acks=acks, timeout_ms=10_000, topic_data=[
        R.TopicProduceData(name=topic, partition_data=[P(index=p, records=r) for p, r in parts.items()])])


def batch(value: bytes = b"v", count: int = 1) -> bytearray:
    """A valid record batch (tidelog's own builder; real clients are tested elsewhere)."""
    return bytearray(build_batches([Record(i, 1_700_000_000_000, b"k", value) for i in range(count)])[0])
