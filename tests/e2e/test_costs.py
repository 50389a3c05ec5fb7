"""Object-store request invariants, observed through the broker's Prometheus endpoint.

* One PUT per flush, whatever the partition count: a single produce request
  for six partitions becomes one ingest object.
* Tailing consumers are served from the in-memory tail: consuming what was
  just produced costs no object-store GET at all.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

from kafka.protocol.producer import ProduceResponse

from tests.support.ports import free_port

from .clients import Rec, consume_from_latest, create_topic, produce
from .raw import PRODUCE_V, Raw, batch, produce_request

# Checkpoints (which PUT an index object) must not interleave with the counts.
QUIET = {"TIDELOG_CHECKPOINT_INTERVAL_MS": "600000"}
_SAMPLE = re.compile(r'^tidelog_storage_requests\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def object_requests(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for m in _SAMPLE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels.get("store") == "object":
            out[labels["operation"]] = float(m["value"])
    return out


def settled(metrics_port: int) -> dict[str, float]:
    """Counters after the broker's once-a-second metrics refresh has caught up."""
    time.sleep(1.3)
    return object_requests(metrics_port)


def test_one_put_per_flush_and_no_gets_for_tailing_consumers(brokers) -> None:
    metrics_port = free_port()
    broker = brokers.start(extra_args=["--metrics-port", str(metrics_port)], env=QUIET)
    topic = f"cost-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 6)
    produce("confluent", broker.bootstrap, topic, [Rec(b"warm", b"up", partition=p) for p in range(6)])
    before = settled(metrics_port)

    # One request, six partitions: one flush, one ingest object.
    request = produce_request(topic, {p: bytes(batch(b"six")) for p in range(6)})
    conn = Raw(broker.port)
    response = conn.call(request, ProduceResponse[PRODUCE_V])
    conn.close()
    assert [p.error_code for p in response.responses[0].partition_responses] == [0] * 6
    after = settled(metrics_port)
    assert after.get("PutObject", 0) - before.get("PutObject", 0) == 1

    # Tailing: every record is read right after it is produced.
    for p in (0, 3):
        got = consume_from_latest("kafka-python", broker.bootstrap, topic, p,
                                  lambda i: produce("confluent", broker.bootstrap, topic,
                                                    [Rec(b"t", f"tail-{i}".encode(), partition=p)]))
        assert got and got[0].value.startswith(b"tail-")
    final = settled(metrics_port)
    assert final.get("GetObject", 0) == before.get("GetObject", 0)
