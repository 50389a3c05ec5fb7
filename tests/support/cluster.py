"""Multi-broker clusters for the fault tests: brokers, load, and checks against the store.

A `Cluster` is several `tidelog serve` subprocesses sharing one bucket and
table on moto, reached through a `FaultProxy` so a test can break the S3 and
DynamoDB paths.  Store inspection (commit logs, sessions, ingest objects)
talks to moto directly, never through the proxy, so it sees the truth even
while faults are on.

`Load` produces numbered records with an idempotent acks=all confluent-kafka
producer on a background thread and remembers which were acknowledged and
where; `read_all` consumes every partition to its end; `verify` checks the
guarantees every fault test asserts: each acknowledged record is stored
exactly once, at the offset its producer was told, offsets have no holes,
and per partition records appear in the order they were produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pytest

from .broker_proc import BrokerProcess, bug_lines

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
_CLEARED_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
# Log lines that mean a broker bug rather than an expected failure.


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    return {**env, **AWS_ENV}


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """Brokers on one fresh bucket + table; ``endpoint`` is what brokers use (the proxy)."""

    def __init__(self, moto_url: str, endpoint: str, *, ttl_ms: int = 3000, extra_args: list[str] | None = None) -> None:
        self.moto_url = moto_url
        self.endpoint = endpoint
        self.ttl_ms = ttl_ms
        self.extra_args = extra_args or []
        name = f"tidelog-cluster-{uuid.uuid4().hex}"[:63]
        self.bucket = self.table = name
        self.brokers: dict[int, BrokerProcess] = {}
        self.retired: list[BrokerProcess] = []

    @property
    def aws(self) -> dict[str, str]:
        return {"bucket": self.bucket, "table": self.table, "endpoint_url": self.endpoint}

    def init(self) -> "Cluster":
        args = [sys.executable, "-m", "tidelog.cli", "init", "--s3-bucket", self.bucket, "--dynamodb-table",
                self.table, "--endpoint-url", self.moto_url, "--region", REGION]
        done = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"tidelog init failed: {done.stdout}{done.stderr}")
        return self

    def start(self, *node_ids: int, extra_args: list[str] | None = None,
              args_for: dict[int, list[str]] | None = None) -> list[BrokerProcess]:
        """Start brokers concurrently (each takes seconds to boot) and wait until all listen.
        ``args_for`` adds flags for single nodes."""
        procs = []
        for node in node_ids:
            if node in self.brokers:
                raise ValueError(f"node {node} is already running")
            args = ["--lease-ttl-ms", str(self.ttl_ms), *self.extra_args, *(extra_args or []),
                    *(args_for or {}).get(node, [])]
            procs.append(BrokerProcess(aws=self.aws, node_id=node, extra_args=args,
                                       env={k: v for k, v in subprocess_env().items() if k.startswith("AWS_")}))
        errors: list[BaseException] = []

        def boot(proc: BrokerProcess) -> None:
            try:
                proc.start(timeout=60)
            except BaseException as exc:  # noqa: BLE001 - re-raised below on the test thread
                errors.append(exc)
        threads = [threading.Thread(target=boot, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is None:
                self.brokers[proc.node_id] = proc
            else:
                self.retired.append(proc)
        if errors:
            raise errors[0]
        return procs

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def kill(self, node: int) -> BrokerProcess:
        proc = self.brokers.pop(node)
        proc.kill()
        self.retired.append(proc)
        return proc

    def stop(self, node: int) -> int:
        proc = self.brokers.pop(node)
        code = proc.stop(timeout=60)
        self.retired.append(proc)
        return code

    def pause(self, node: int) -> None:
        self.brokers[node].proc.send_signal(signal.SIGSTOP)

    def resume(self, node: int) -> None:
        self.brokers[node].proc.send_signal(signal.SIGCONT)

    def close(self) -> list[str]:
        """Stop every broker still running; returns problems (unclean exits, logged bugs)."""
        problems = []
        for node in list(self.brokers):
            proc = self.brokers[node]
            try:
                proc.proc.send_signal(signal.SIGCONT)
                code = self.stop(node)
                if code != 0:
                    problems.append(f"broker {node} exited with {code} after SIGTERM")
            except RuntimeError as exc:
                problems.append(str(exc))
                proc.kill()
        for proc in self.retired:
            proc.kill()
            proc._log.close()
            problems += [f"broker {proc.node_id} logged: {line}" for line in bug_lines(proc.logs())]
        return problems

    def log_events(self, proc: BrokerProcess, msg: str) -> list[dict]:
        return [e for e in parse_log(proc.logs()) if e.get("msg") == msg]

    def takeover_seconds(self, topic: str, partitions: Iterable[int], since: float) -> float:
        """Seconds from ``since`` (wall clock) until the last of ``partitions`` was led again,
        from the brokers' own "leading partition" log lines."""
        firsts = {}
        for proc in [*self.brokers.values(), *self.retired]:
            for e in self.log_events(proc, "leading partition"):
                at = _log_time(e)
                if e.get("topic") == topic and at >= since:
                    firsts[e["partition"]] = min(firsts.get(e["partition"], at), at)
        missing = set(partitions) - set(firsts)
        assert not missing, f"partitions {sorted(missing)} were never led again"
        return max(firsts[p] for p in partitions) - since

    # --- metadata ----------------------------------------------------------------
    def leaders(self, topic: str, via: int | None = None) -> dict[int, int]:
        """partition -> leader node id, as a broker (``via``, default any) reports it in Metadata."""
        from confluent_kafka.admin import AdminClient

        boot = self.brokers[via].bootstrap if via is not None else self.bootstrap
        admin = AdminClient({"bootstrap.servers": boot, "socket.timeout.ms": 5000})
        meta = admin.list_topics(topic, timeout=10)
        return {p: m.leader for p, m in meta.topics[topic].partitions.items()}

    def wait_for_leaders(self, topic: str, partitions: int, timeout: float, *,
                         avoid: Iterable[int] = (), spread: bool = False) -> dict[int, int]:
        """Wait until every partition has a live leader (none in ``avoid``), as every broker reports it."""
        avoid = set(avoid)

        def settled() -> dict[int, int] | None:
            seen = None
            for node in self.brokers:
                try:
                    leaders = self.leaders(topic, via=node)
                except Exception:  # noqa: BLE001 - a broker may be briefly unreachable
                    return None
                if len(leaders) != partitions or any(l < 0 or l in avoid or l not in self.brokers
                                                     for l in leaders.values()):
                    return None
                if seen is not None and leaders != seen:
                    return None
                seen = leaders
            if spread and len(set(seen.values())) != len(self.brokers):
                return None
            return seen
        return wait_until(settled, timeout, f"leaders of {topic} settled (avoiding {sorted(avoid)})", interval=0.25)

    def create_topic(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=30).values():
            future.result(timeout=30)

    # --- the store, read directly ------------------------------------------------
    def inspect(self, fn):
        """Run ``await fn(storage)`` against the store, bypassing the proxy."""
        from tidelog.storage.factory import StorageConfig, open_storage

        async def run():
            for k, v in AWS_ENV.items():
                os.environ.setdefault(k, v)
            storage = await open_storage(StorageConfig(s3_bucket=self.bucket, dynamodb_table=self.table,
                                                       endpoint_url=self.moto_url, region=REGION))
            try:
                return await fn(storage)
            finally:
                await storage.close()
        return asyncio.run(run())

    def session_of(self, node: int) -> dict:
        from tidelog.storage import keys

        async def get(storage):
            item = await storage.meta.get(keys.BROKERS_PK, keys.broker_sk(node))
            return dict(item.attrs) if item else {}
        return self.inspect(get)

    def commit_log(self, session: str) -> list[tuple[str, dict]]:
        """(sort key, attributes) of every item in a session's commit log."""
        from tidelog.storage import keys

        async def query(storage):
            return [(i.sk, dict(i.attrs)) for i in await storage.meta.query(keys.commit_log_pk(session))]
        return self.inspect(query)

    def ingest_objects(self, session: str) -> list[str]:
        async def listing(storage):
            return [o.key async for o in storage.objects.list(f"ingest/{session}/")]
        return self.inspect(listing)


def _log_time(entry: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


def parse_log(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out




# --- load ----------------------------------------------------------------------
def value_of(seq: int, size: int = 100) -> bytes:
    head = f"{seq:09d}".encode()
    return head + b"." * (size - len(head))


def seq_of(value: bytes) -> int:
    return int(value[:9])


@dataclass
class Load:
    """Produces ``count`` numbered records round-robin over ``partitions`` at about ``rate``/s,
    idempotent with acks=all, from a background thread."""

    bootstrap: str
    topic: str
    partitions: int
    count: int
    rate: int = 2000
    config: dict = field(default_factory=dict)
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (partition, offset)
    failed: dict[int, str] = field(default_factory=dict)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    error: BaseException | None = None

    def start(self) -> "Load":
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, n: int, timeout: float) -> None:
        wait_until(lambda: self.acked_count() >= n or self.error, timeout, f"{n} acknowledged records")
        if self.error:
            raise self.error

    def stop(self) -> None:
        """Stop sending new records (what was sent is still delivered)."""
        self._stop.set()

    def join(self, timeout: float = 180) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"producer did not finish in {timeout}s: sent={self.sent} acked={len(self.acked)}")
        if self.error:
            raise self.error

    def _delivered(self, err, msg) -> None:
        seq = seq_of(msg.value())
        with self._lock:
            if err is not None:
                self.failed[seq] = str(err)
            else:
                self.acked[seq] = (msg.partition(), msg.offset())

    def _run(self) -> None:
        from confluent_kafka import Producer

        try:
            producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
                                 "linger.ms": 5, "message.timeout.ms": 120_000, **self.config})
            started = time.monotonic()
            for seq in range(self.count):
                if self._stop.is_set():
                    break
                while True:
                    try:
                        producer.produce(self.topic, value=value_of(seq), partition=seq % self.partitions,
                                         on_delivery=self._delivered)
                        break
                    except BufferError:
                        producer.poll(0.05)
                self.sent = seq + 1
                producer.poll(0)
                ahead = self.sent / self.rate - (time.monotonic() - started)
                if ahead > 0.005:
                    time.sleep(ahead)
            left = producer.flush(150)
            if left:
                raise AssertionError(f"{left} records still undelivered after flush")
        except BaseException as exc:  # noqa: BLE001 - surfaced by join()
            self.error = exc


def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 90) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition from the log start to the high watermark: p -> [(offset, value)]."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    ends = {}
    for p in range(partitions):
        errors: list[str] = []
        try:
            low, high = wait_until(lambda p=p: _fresh_watermarks(bootstrap, topic, p, errors), 30,
                                   f"watermarks of {topic}-{p}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last errors: {errors[-3:]}; metadata per broker: "
                                 f"{_metadata_per_broker(bootstrap, topic)}") from None
        ends[p] = high
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 100})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < partitions:
            if time.monotonic() > deadline:
                got = {p: len(v) for p, v in out.items()}
                raise AssertionError(f"reading {topic} timed out: got={got} ends={ends}")
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= ends[msg.partition()]:
                            done.add(msg.partition())
                        continue
                    raise AssertionError(f"consume error: {msg.error()}")
                out[msg.partition()].append((msg.offset(), msg.value()))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        return out
    finally:
        consumer.close()


def _metadata_per_broker(bootstrap: str, topic: str) -> dict:
    """Each broker's own answer to Metadata for ``topic`` (diagnostics for a failed read)."""
    from confluent_kafka.admin import AdminClient

    out = {}
    for address in bootstrap.split(","):
        try:
            meta = AdminClient({"bootstrap.servers": address}).list_topics(topic, timeout=5)
            t = meta.topics[topic]
            out[address] = {"error": str(t.error) if t.error else None,
                            "leaders": {p: (m.leader, str(m.error) if m.error else None)
                                        for p, m in t.partitions.items()}}
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            out[address] = repr(exc)
    return out


def _fresh_watermarks(bootstrap: str, topic: str, partition: int, errors: list[str]):
    """Ask again from a brand-new client: librdkafka can keep a partition 'unknown' in
    one client's cache after leadership moved back to a rejoined broker, while a new
    client (and every broker's Metadata) agree on the leader."""
    from confluent_kafka import Consumer

    fresh = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}"})
    try:
        return _watermarks(fresh, topic, partition, errors)
    finally:
        fresh.close()


def _watermarks(consumer, topic: str, partition: int, errors: list[str]):
    from confluent_kafka import KafkaException, TopicPartition

    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5, cached=False)
    except KafkaException as exc:
        errors.append(str(exc))
        return None


def verify(load: Load, records: dict[int, list[tuple[int, bytes]]]) -> dict[str, int]:
    """Assert the produce guarantees; returns counts for the report."""
    problems = []
    seen: dict[int, tuple[int, int]] = {}
    for p, recs in records.items():
        offsets = [o for o, _ in recs]
        if offsets != list(range(len(offsets))):
            holes = sorted(set(range(max(offsets, default=0))) - set(offsets))
            problems.append(f"partition {p}: offsets are not 0..{len(offsets) - 1} without holes; "
                            f"holes={holes[:10]} (of {len(holes)})")
        previous = -1
        for offset, value in recs:
            seq = seq_of(value)
            if seq in seen:
                problems.append(f"seq {seq} duplicated at {seen[seq]} and {(p, offset)}")
            seen[seq] = (p, offset)
            if seq <= previous:
                problems.append(f"partition {p}: seq {seq} at offset {offset} after seq {previous} (out of order)")
            previous = seq
    for seq, where in load.acked.items():
        if seq not in seen:
            problems.append(f"acknowledged seq {seq} at {where} is missing")
        elif seen[seq] != where:
            problems.append(f"seq {seq} acknowledged at {where} but stored at {seen[seq]}")
    unacked = sorted(set(seen) - set(load.acked))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
    return {"acked": len(load.acked), "failed": len(load.failed), "stored": len(seen),
            "stored_unacked": len(unacked)}


# --- fixtures (import them into a test module to use them) ------------------------

@pytest.fixture
def fault_proxy(moto_url: str):
    """A fresh fault proxy in front of the session's moto server (rules start empty)."""
    from .fault_proxy import FaultProxy

    with FaultProxy(moto_url, seed=7) as proxy:
        yield proxy


@pytest.fixture
def make_cluster(moto_url: str, fault_proxy):
    """``make_cluster(ttl_ms=..., extra_args=[...])``: an initialised cluster behind the proxy, no brokers
    yet.  At teardown every broker is stopped; an unclean exit or a logged bug fails the test."""
    made: list[Cluster] = []

    def make(**kwargs) -> Cluster:
        cluster = Cluster(moto_url, fault_proxy.url, **kwargs).init()
        made.append(cluster)
        return cluster
    yield make
    fault_proxy.clear()
    problems = [p for c in made for p in c.close()]
    assert not problems, "\n".join(problems)
