"""Prometheus metrics, one registry per process, served on ``--metrics-port``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tidelog_requests", "Kafka requests handled", ["api"], registry=r)
        self.request_errors = Counter("tidelog_request_errors", "Requests answered with a top-level failure", ["api"], registry=r)
        self.bytes_in = Counter("tidelog_bytes_in", "Record bytes accepted from producers", registry=r)
        self.bytes_out = Counter("tidelog_bytes_out", "Record bytes returned to consumers", registry=r)
        self.rejected_batches = Counter("tidelog_rejected_batches", "Produce batches rejected by validation", ["reason"], registry=r)
        self.flush_seconds = Histogram("tidelog_flush_seconds", "Time to write and commit one flush", registry=r,
                                       buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.flush_bytes = Histogram("tidelog_flush_bytes", "Size of one flushed ingest object", registry=r,
                                     buckets=(1e3, 1e4, 1e5, 1e6, 4e6, 16e6, 64e6))
        self.storage_requests = Gauge("tidelog_storage_requests", "Object and metadata store requests by operation",
                                      ["store", "operation"], registry=r)
        self.write_units = Gauge("tidelog_metadata_write_units", "DynamoDB-equivalent write units consumed", registry=r)
        self.connections = Gauge("tidelog_connections", "Open client connections", registry=r)
        self.partitions_led = Gauge("tidelog_partitions_led", "Partitions this broker leads", registry=r)
        self.replication_lag = Gauge("tidelog_replication_lag_seconds",
                                     "How far the replica bucket is behind (the live RPO; 0 in sync)", registry=r)
        self.replication_missing = Gauge("tidelog_replication_missing_objects",
                                         "Primary ingest objects not in the replica bucket yet", registry=r)

    def set_replication(self, lag) -> None:
        self.replication_lag.set(lag.lag_ms / 1000)
        self.replication_missing.set(lag.missing)

    def sync_storage(self, objects_stats, meta_stats) -> None:
        for name, stats in (("object", objects_stats), ("metadata", meta_stats)):
            for op, count in stats.requests.items():
                self.storage_requests.labels(store=name, operation=op).set(count)
        self.write_units.set(meta_stats.write_units)


METRICS = BrokerMetrics()
