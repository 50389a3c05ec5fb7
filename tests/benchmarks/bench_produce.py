"""Broker produce benchmark: throughput, latency, CPU and storage requests with confluent-kafka.

Three brokers, each a real subprocess on a free loopback port:

* ``null``: ``null_sink_broker.py`` -- same framing, codec and CRC check as
  tidelog, stores nothing.  The ceiling for this client on this machine.
* ``embedded``: ``tidelog serve`` on a temporary data directory.
* ``moto``: ``tidelog serve`` on S3 + DynamoDB served by moto.

Both tidelog brokers run with ``--flush-interval-ms 20`` and ``--metrics-port``.
Producers use acks=all, linger.ms=5, 8 partitions, records of 100 B and 1 KiB,
and librdkafka's default of no idempotence.  An idempotent producer is also
measured (``paced-idem``): librdkafka then keeps at most 5 requests in flight
per connection and sends one partition per ProduceRequest (librdkafka issue
#1700), so against a broker that answers only after its flush commits, at
most 5 partitions make progress per flush.

Phases per broker and record size:

* throughput: produce as fast as the client can for ``--duration`` seconds
  (``produce_batch`` per partition), then wait for every acknowledgement;
  the rate counts acknowledged records over that whole time.  Broker CPU
  is the broker process's own utime + stime from /proc over the same time.
* paced: ``--paced-rate`` records/s for ``--duration`` seconds; latency is
  librdkafka's produce()-to-acknowledgement time per record (linger included),
  once with the default producer and once with an idempotent one.

Then, on the tidelog brokers, storage requests read from the broker's own
Prometheus metrics (``tidelog_storage_requests``, ``tidelog_flush_seconds_count``):
object PUTs per flush with 1 and with 1,000 partitions written, and object
GETs while a consumer tails the log (0 expected: tailing reads are served
from memory).

Targets are printed as PASS/MISS next to each number and never fail the run.
Timings on a shared 2-core machine are noisy: the client (Python + librdkafka
threads) competes with the broker for the same cores, equally for every broker.

Run: ``python tests/benchmarks/bench_produce.py [--quick] [--brokers null,embedded,moto]
[--duration S] [--paced-rate N] [--py-spy DIR] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests.support` importable
    sys.path.insert(0, str(REPO_ROOT))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support.broker_proc import BrokerProcess  # noqa: E402
from tests.support.moto_server import MotoServer  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tidelog.storage.factory import StorageConfig, open_storage  # noqa: E402
from tidelog.storage.partition_log import read_header  # noqa: E402

NULL_SINK = Path(__file__).resolve().with_name("null_sink_broker.py")
TOPIC, NARROW, WIDE = "bench", "narrow", "wide"
PARTITIONS, WIDE_PARTITIONS = 8, 1000
SIZES = (100, 1024)
FLUSH_INTERVAL_MS = 20
GIB = 1 << 30
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

# Targets (printed, never enforced).
MIN_NULL_RATIO = 0.8
MAX_CPU_S_PER_M_RECORDS = 1.0
MAX_CPU_S_PER_GIB = 2.0
MAX_P99_MS = 50.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process (not its children) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------
# Brokers under test
# --------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    bootstrap: str
    pid: int
    stop: Callable[[], None]
    metrics_url: str | None = None
    storage: StorageConfig | None = None


def start_null_sink() -> Target:
    proc = subprocess.Popen(
        [sys.executable, str(NULL_SINK), "--port", "0", "--topic", f"{TOPIC}:{PARTITIONS}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready port="):
        proc.kill()
        raise RuntimeError(f"null sink did not start: {line!r}")
    port = int(line.split("=", 1)[1])

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Target("null", f"127.0.0.1:{port}", proc.pid, stop)


def start_tidelog(name: str, aws: dict | None, workdir: Path) -> Target:
    metrics_port = free_port()
    args = ["--flush-interval-ms", str(FLUSH_INTERVAL_MS), "--metrics-port", str(metrics_port), "--log-level", "warning"]
    if aws:
        storage = StorageConfig(data_dir=None, s3_bucket=aws["bucket"], dynamodb_table=aws["table"],
                                endpoint_url=aws["endpoint_url"])
        subprocess.run([sys.executable, "-m", "tidelog.cli", "init", "--s3-bucket", aws["bucket"],
                        "--dynamodb-table", aws["table"], "--endpoint-url", aws["endpoint_url"]],
                       check=True, capture_output=True, env={**os.environ, **AWS_ENV})
        broker = BrokerProcess(aws=aws, extra_args=args, env=AWS_ENV)
    else:
        data_dir = workdir / "data"
        storage = StorageConfig(data_dir=str(data_dir))
        broker = BrokerProcess(data_dir=data_dir, extra_args=args)
    broker.start()
    target = Target(name, broker.bootstrap, broker.proc.pid, lambda: broker.__exit__(None, None, None),
                    f"http://127.0.0.1:{metrics_port}/metrics", storage)
    create_topic(target, TOPIC, PARTITIONS)
    return target


def create_topic(target: Target, name: str, partitions: int) -> float:
    """Create a topic and wait until every partition has a leader; returns the seconds it took."""
    admin = AdminClient({"bootstrap.servers": target.bootstrap})
    started = time.perf_counter()
    for future in admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=300,
                                      request_timeout=300).values():
        future.result(timeout=600)
    while True:
        meta = admin.list_topics(name, timeout=30).topics[name]
        if meta.error is None and len(meta.partitions) == partitions and all(
                p.leader >= 0 for p in meta.partitions.values()):
            return time.perf_counter() - started
        time.sleep(0.2)


# --------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------


@dataclass
class Load:
    size: int
    mode: str
    sent: int = 0
    acked: int = 0
    errors: int = 0
    seconds: float = 0.0
    broker_cpu_s: float = 0.0
    broker_sys_s: float = 0.0
    client_cpu_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    @property
    def mib_s(self) -> float:
        return self.rate * self.size / (1 << 20)

    @property
    def cpu_per_m_records(self) -> float:
        return self.broker_cpu_s / (self.acked / 1e6) if self.acked else float("nan")

    @property
    def cpu_per_gib(self) -> float:
        return self.broker_cpu_s / (self.acked * self.size / GIB) if self.acked else float("nan")


class Client:
    """One idempotent acks=all producer and the acknowledgements it has seen."""

    def __init__(self, bootstrap: str, idempotent: bool = False) -> None:
        self.idempotent = idempotent
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": idempotent, "linger.ms": 5,
            "queue.buffering.max.messages": 100_000, "queue.buffering.max.kbytes": 1 << 20,
            "message.timeout.ms": 120_000,
        })
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def on_delivery(self, err, msg) -> None:
        if err is None:
            self.latencies.append(msg.latency())
        else:
            self.errors += 1
            self.first_error = self.first_error or str(err)

    def warm_up(self, topic: str, partitions: int) -> None:
        """Connections, metadata and the producer id exist before anything is timed."""
        for p in range(partitions):
            self.producer.produce(topic, b"warm-up", partition=p)
        if self.producer.flush(120) != 0:
            raise RuntimeError("warm-up records were not acknowledged")

    def reset(self) -> None:
        self.latencies = []
        self.errors = 0

    def finish(self, load: Load, started: float, cpu0: tuple[float, float], me0: float, pid: int) -> Load:
        left = self.producer.flush(300)
        load.seconds = time.perf_counter() - started
        user, system = cpu_times(pid)
        load.broker_cpu_s = user + system - sum(cpu0)
        load.broker_sys_s = system - cpu0[1]
        load.client_cpu_s = time.process_time() - me0
        load.acked = len(self.latencies)
        load.errors = self.errors + left
        load.p50_ms = percentile(self.latencies, 50) * 1000
        load.p99_ms = percentile(self.latencies, 99) * 1000
        load.max_ms = max(self.latencies, default=float("nan")) * 1000
        if load.errors:
            print(f"  ! {load.errors} records failed: {self.first_error}")
        return load

    def saturate(self, topic: str, partitions: int, size: int, duration: float, pid: int) -> Load:
        payload = os.urandom(size)
        chunk = 256
        load = Load(size, "throughput")
        self.reset()
        cpu0, me0 = cpu_times(pid), time.process_time()
        started = time.perf_counter()
        deadline = started + duration
        while time.perf_counter() < deadline:
            for p in range(partitions):
                batch = [{"value": payload} for _ in range(chunk)]
                queued = 0
                while queued < chunk:
                    try:
                        queued += self.producer.produce_batch(topic, batch[queued:], partition=p,
                                                              on_delivery=self.on_delivery)
                    except BufferError:
                        pass
                    if queued < chunk:
                        self.producer.poll(0.002)
                load.sent += chunk
            self.producer.poll(0)
        return self.finish(load, started, cpu0, me0, pid)

    def paced(self, topic: str, partitions: int, size: int, duration: float, rate: float, pid: int) -> Load:
        payload = os.urandom(size)
        tick = 0.002
        load = Load(size, "paced-idem" if self.idempotent else "paced")
        self.reset()
        cpu0, me0 = cpu_times(pid), time.process_time()
        started = time.perf_counter()
        while (now := time.perf_counter()) < started + duration:
            due = int((now - started) * rate)
            while load.sent < due:
                try:
                    self.producer.produce(topic, payload, partition=load.sent % partitions,
                                          on_delivery=self.on_delivery)
                except BufferError:
                    break  # the client is behind; the next tick catches up
                load.sent += 1
            self.producer.poll(0)
            time.sleep(max(0.0, tick - (time.perf_counter() - now)))
        return self.finish(load, started, cpu0, me0, pid)


# --------------------------------------------------------------------------
# Storage request counts (tidelog brokers only)
# --------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _flush_state(m: dict) -> dict:
    """What must stop changing before counts are read: flushes and object-store requests.
    Metadata requests never settle (session renewals run every few seconds)."""
    return {k: v for k, v in m.items() if k[0] == "tidelog_flush_seconds_count"
            or (k[0] == "tidelog_storage_requests" and ("store", "object") in k[1])}


def settled_scrape(url: str, timeout: float = 120) -> dict[tuple[str, tuple], float]:
    """Metrics once the broker is idle: storage gauges are synced every second, and a
    checkpoint may still be running after the last acknowledgement."""
    deadline = time.monotonic() + timeout
    previous = scrape(url)
    while True:
        time.sleep(1.1)
        current = scrape(url)
        if _flush_state(current) == _flush_state(previous) or time.monotonic() > deadline:
            return current
        previous = current


def metric(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class StoreCounts:
    label: str
    flushes: float
    puts: float
    index_puts: int
    gets: float
    partitions_per_flush: float | None = None
    records: int = 0
    consumed: int | None = None

    @property
    def ingest_puts_per_flush(self) -> float:
        return (self.puts - self.index_puts) / self.flushes if self.flushes else float("nan")


async def _count_keys(config: StorageConfig, prefix: str) -> int:
    storage = await open_storage(config)
    try:
        return sum([1 async for _ in storage.objects.list(prefix)])
    finally:
        await storage.close()


async def _partitions_per_flush(config: StorageConfig, sample: int) -> float:
    storage = await open_storage(config)
    try:
        keys = [info.key async for info in storage.objects.list("ingest/")]
        picked = keys[-sample:]
        sizes = [len((await read_header(storage.objects, k)).partitions) for k in picked]
        return sum(sizes) / len(sizes) if sizes else float("nan")
    finally:
        await storage.close()


def measure_requests(target: Target, label: str, run: Callable[[], int], *, sample_partitions: bool = False,
                     consumed: Callable[[], int] | None = None) -> StoreCounts:
    before = settled_scrape(target.metrics_url)
    index_before = asyncio.run(_count_keys(target.storage, "index/"))
    records = run()
    after = settled_scrape(target.metrics_url)
    index_after = asyncio.run(_count_keys(target.storage, "index/"))

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    counts = StoreCounts(label, delta("tidelog_flush_seconds_count"),
                         delta("tidelog_storage_requests", store="object", operation="PutObject"),
                         index_after - index_before,
                         delta("tidelog_storage_requests", store="object", operation="GetObject"),
                         records=records, consumed=consumed() if consumed else None)
    if sample_partitions:
        counts.partitions_per_flush = asyncio.run(_partitions_per_flush(target.storage, 20))
    return counts


class TailingConsumer(threading.Thread):
    """Reads every partition of a topic from its end, counting records, until stopped."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True, name="tailing-consumer")
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.count = 0
        self.ready = threading.Event()
        self.halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            # Start at each partition's current end (ListOffsets), so the position is known at once.
            start = []
            for tp in self.tps:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=30)
                start.append(TopicPartition(tp.topic, tp.partition, high))
            self.consumer.assign(start)
            self.ready.set()
            while not self.halt.is_set():
                for msg in self.consumer.consume(1000, 0.1):
                    if msg.error() is None:
                        self.count += 1
                    elif self.error is None:
                        self.error = str(msg.error())
        except KafkaException as exc:
            self.error = str(exc)
            self.ready.set()
        finally:
            self.consumer.close()


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


@dataclass
class TargetResult:
    name: str
    loads: list[Load] = field(default_factory=list)
    requests: list[StoreCounts] = field(default_factory=list)
    wide_create_s: float | None = None
    wide_paced: Load | None = None
    moto_cpu_s: float | None = None


def py_spy(pid: int, seconds: float, out: Path | None) -> subprocess.Popen | None:
    if out is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid),
                             "-d", str(max(1, int(seconds))), "-r", "200", "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_target(target: Target, args: argparse.Namespace, moto_pid: int | None) -> TargetResult:
    result = TargetResult(target.name)
    moto_cpu0 = cpu_seconds(moto_pid) if moto_pid else None
    client = Client(target.bootstrap)
    client.warm_up(TOPIC, PARTITIONS)
    idempotent = Client(target.bootstrap, idempotent=True)
    idempotent.warm_up(TOPIC, PARTITIONS)
    for size in SIZES:
        spy = py_spy(target.pid, args.duration, args.py_spy and args.py_spy / f"{target.name}-{size}B.txt")
        load = client.saturate(TOPIC, PARTITIONS, size, args.duration, target.pid)
        if spy is not None:
            spy.wait()
        print_load(target.name, load)
        result.loads.append(load)
        if not args.no_paced:
            for c in (client, idempotent):
                load = c.paced(TOPIC, PARTITIONS, size, args.duration, args.paced_rate, target.pid)
                print_load(target.name, load)
                result.loads.append(load)
    if target.metrics_url is not None and not args.skip_requests:
        measure_storage(target, client, args, result)
    if moto_pid:
        result.moto_cpu_s = cpu_seconds(moto_pid) - moto_cpu0
    return result


def measure_storage(target: Target, client: Client, args: argparse.Namespace, result: TargetResult) -> None:
    create_topic(target, NARROW, 1)
    client.warm_up(NARROW, 1)
    counts = measure_requests(target, "1 partition", lambda: client.paced(
        NARROW, 1, 100, args.request_duration, args.wide_rate, target.pid).acked)
    print_counts(target.name, counts)
    result.requests.append(counts)

    tail = TailingConsumer(target.bootstrap, TOPIC, PARTITIONS)
    tail.start()
    if not tail.ready.wait(60) or tail.error:
        print(f"  ! tailing consumer did not start: {tail.error}")
    start_count = tail.count

    def produce_while_tailing() -> int:
        acked = client.paced(TOPIC, PARTITIONS, 100, args.request_duration, args.paced_rate, target.pid).acked
        deadline = time.monotonic() + 60
        while tail.count - start_count < acked and time.monotonic() < deadline:
            time.sleep(0.05)
        return acked

    counts = measure_requests(target, "tailing consumer", produce_while_tailing,
                              consumed=lambda: tail.count - start_count)
    tail.halt.set()
    tail.join(30)
    print_counts(target.name, counts)
    result.requests.append(counts)

    if args.no_wide:
        return
    result.wide_create_s = create_topic(target, WIDE, WIDE_PARTITIONS)
    print(f"  {target.name}: created {WIDE} with {WIDE_PARTITIONS} partitions in {result.wide_create_s:.1f} s")
    client.warm_up(WIDE, WIDE_PARTITIONS)

    def produce_wide() -> int:
        result.wide_paced = client.paced(WIDE, WIDE_PARTITIONS, 100, args.wide_duration, args.wide_rate, target.pid)
        return result.wide_paced.acked

    counts = measure_requests(target, f"{WIDE_PARTITIONS} partitions", produce_wide, sample_partitions=True)
    print_load(target.name + f" ({WIDE_PARTITIONS} partitions)", result.wide_paced)
    print_counts(target.name, counts)
    result.requests.append(counts)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def print_load(name: str, x: Load) -> None:
    print(f"  {name:<10} {x.mode:<10} {x.size:>5} B  {x.rate:>10,.0f} rec/s {x.mib_s:>7.1f} MiB/s  "
          f"p50 {x.p50_ms:>7.1f} ms  p99 {x.p99_ms:>7.1f} ms  max {x.max_ms:>7.1f} ms  "
          f"broker cpu {x.broker_cpu_s:5.2f} s ({x.broker_sys_s:.2f} sys)  client cpu {x.client_cpu_s:5.2f} s  ({x.acked:,} acked in {x.seconds:.1f} s)")


def print_counts(name: str, c: StoreCounts) -> None:
    extra = f", {c.partitions_per_flush:.0f} partitions per flush (last 20 objects)" if c.partitions_per_flush else ""
    consumed = f", consumer read {c.consumed:,}/{c.records:,}" if c.consumed is not None else ""
    print(f"  {name:<10} {c.label:<18} {c.flushes:>6.0f} flushes  {c.puts:>6.0f} PUTs ({c.index_puts} checkpoint index) "
          f"-> {c.ingest_puts_per_flush:.3f} ingest PUT/flush  {c.gets:.0f} GETs{extra}{consumed}")


def summary(results: list[TargetResult]) -> None:
    print("\n== targets ==")
    by = {r.name: r for r in results}
    null = by.get("null")
    if null is not None:
        for x in null.loads:
            if x.mode == "throughput":
                unit = (f"{x.cpu_per_m_records:.2f} CPU-s per million records" if x.size == 100
                        else f"{x.cpu_per_gib:.2f} CPU-s per GiB")
                print(f"{'null':<9} {x.size:>5} B reference: {x.rate:,.0f} rec/s, {unit} for framing, decode and CRC alone")
    for r in results:
        if r.name == "null":
            continue
        for size in SIZES:
            thr = next((x for x in r.loads if x.size == size and x.mode == "throughput"), None)
            if thr is None:
                continue
            if null is not None:
                base = next(x for x in null.loads if x.size == size and x.mode == "throughput")
                ratio = thr.rate / base.rate if base.rate else float("nan")
                print(f"{r.name:<9} {size:>5} B rate vs null sink: {thr.rate:,.0f} / {base.rate:,.0f} = {ratio:.2f}x "
                      f"(target >= {MIN_NULL_RATIO}x) {verdict(ratio >= MIN_NULL_RATIO)}")
            if size == 100:
                print(f"{r.name:<9} {size:>5} B broker CPU: {thr.cpu_per_m_records:.2f} CPU-s per million records "
                      f"(target <= {MAX_CPU_S_PER_M_RECORDS}) {verdict(thr.cpu_per_m_records <= MAX_CPU_S_PER_M_RECORDS)}")
            else:
                print(f"{r.name:<9} {size:>5} B broker CPU: {thr.cpu_per_gib:.2f} CPU-s per GiB "
                      f"(target <= {MAX_CPU_S_PER_GIB}) {verdict(thr.cpu_per_gib <= MAX_CPU_S_PER_GIB)}")
            paced = next((x for x in r.loads if x.size == size and x.mode == "paced"), None)
            if paced is not None:
                target_note = f"(target <= {MAX_P99_MS:.0f} ms on embedded) {verdict(paced.p99_ms <= MAX_P99_MS)}" \
                    if r.name == "embedded" else "(no target)"
                print(f"{r.name:<9} {size:>5} B paced p99: {paced.p99_ms:.1f} ms at {paced.rate:,.0f} rec/s {target_note}")
        for c in r.requests:
            if c.consumed is not None:
                print(f"{r.name:<9} tailing consumer GETs: {c.gets:.0f} (target 0) {verdict(c.gets == 0)}")
            else:
                ok = abs(c.ingest_puts_per_flush - 1) < 1e-9
                print(f"{r.name:<9} {c.label}: {c.ingest_puts_per_flush:.3f} ingest PUT/flush, "
                      f"{c.puts / c.flushes if c.flushes else float('nan'):.3f} with checkpoint index PUTs "
                      f"(target 1) {verdict(ok)}")
        if r.moto_cpu_s is not None:
            print(f"{r.name:<9} moto server CPU over the run: {r.moto_cpu_s:.1f} s (not counted as broker CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases, null sink and embedded store only (< 60 s)")
    parser.add_argument("--brokers", type=lambda s: [x for x in s.split(",") if x],
                        help="any of null,embedded,moto (default all; quick: null,embedded)")
    parser.add_argument("--duration", type=float, help="seconds per throughput/paced phase (default 8, quick 1.5)")
    parser.add_argument("--paced-rate", type=float, default=5000, help="records/s in the latency phase")
    parser.add_argument("--request-duration", type=float, help="seconds per storage-request phase (default 5, quick 1.5)")
    parser.add_argument("--wide-rate", type=float, default=3000,
                        help="records/s over 1,000 partitions (librdkafka sends one request per partition)")
    parser.add_argument("--wide-duration", type=float, help="seconds of the 1,000-partition phase (default 12, quick 2)")
    parser.add_argument("--moto-wide", action="store_true",
                        help="also create 1,000 partitions on moto (its transactions copy the whole table: ~10 min)")
    parser.add_argument("--no-paced", action="store_true")
    parser.add_argument("--no-wide", action="store_true")
    parser.add_argument("--skip-requests", action="store_true")
    parser.add_argument("--py-spy", type=Path, help="record py-spy raw stacks of each throughput phase into DIR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    args.brokers = args.brokers or (["null", "embedded"] if args.quick else ["null", "embedded", "moto"])
    args.duration = args.duration or (1.5 if args.quick else 8)
    args.request_duration = args.request_duration or (1.5 if args.quick else 5)
    args.wide_duration = args.wide_duration or (2 if args.quick else 12)
    if unknown := set(args.brokers) - {"null", "embedded", "moto"}:
        parser.error(f"unknown broker(s): {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    results: list[TargetResult] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-produce-"))
    try:
        for name in args.brokers:
            moto = None
            target = None
            try:
                if name == "null":
                    target = start_null_sink()
                    moto_pid = None
                elif name == "embedded":
                    target = start_tidelog(name, None, workdir)
                    moto_pid = None
                else:
                    os.environ.update({k: os.environ.get(k, v) for k, v in AWS_ENV.items()})
                    moto = MotoServer()
                    url = moto.start()
                    moto_pid = moto._proc.pid  # MotoServer exposes no pid; its CPU is reported separately
                    target = start_tidelog(name, {"bucket": "bench-produce", "table": "bench-produce",
                                                  "endpoint_url": url}, workdir)
                print(f"\n== {name} ({target.bootstrap}) ==")
                run_args = argparse.Namespace(**vars(args))
                if name == "moto" and not args.moto_wide:
                    run_args.no_wide = True
                results.append(run_target(target, run_args, moto_pid))
            finally:
                if target is not None:
                    target.stop()
                if moto is not None:
                    moto.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary(results)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))


if __name__ == "__main__":
    main()
