"""`tidelog bench produce | consume | e2e`: load tests in the spirit of
kafka-producer-perf-test and the OpenMessaging Benchmark.

Each run uses a fresh topic ``tidelog-bench-<random>`` (deleted afterwards,
even after Ctrl-C) unless ``--topic`` names an existing one.

* produce: throughput, and latency from ``produce()`` to the delivery report
  (the broker's acknowledgement at ``--acks``).
* consume: fills the topic first (not timed), then times reading it back from
  the beginning.  No latency: there is no send time to measure from.
* e2e: a producer and a consumer at once; latency is send -> receipt, from a
  timestamp carried in each payload (see :mod:`tidelog.cli.bench_stats`).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from array import array
from typing import Callable

import click
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import NewTopic

from .bench_stats import PROBE_SIZE, Result, Throttle, filler, latency_summary, make_probe, read_probe, render
from .common import connection_options, emit_json, note, output_option, terminate_as_interrupt
from .errors import CliError
from .kafka import REQUEST_TIMEOUT_S, Kafka
from .produce_cmds import ACKS, COMPRESSIONS
from .progress import Bar

IDLE_LIMIT_S = 30.0  # give up on a consumer that receives nothing for this long
_POLL_EVERY = 64


def bench_options(fn):
    @click.option("--records", type=click.IntRange(min=1), default=100_000, show_default=True,
                  help="Records to send. Example: --records 1000000")
    @click.option("--record-size", type=click.IntRange(min=1), default=1024, show_default=True,
                  help="Bytes per record value. Example: --record-size 100")
    @click.option("--rate", type=float, default=0, show_default=True,
                  help="Records per second to aim for; 0 or -1 means as fast as possible. Example: --rate 5000")
    @click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Partitions of the temporary bench topic. Example: --partitions 6")
    @click.option("--topic", help="Use this existing topic instead of a temporary one. Example: --topic perf")
    @click.option("--acks", type=click.Choice(ACKS), default="all", show_default=True,
                  help="Producer acknowledgement level. Example: --acks 1")
    @click.option("--compression", type=click.Choice(COMPRESSIONS), default="none", show_default=True,
                  help="Producer batch compression. Example: --compression lz4")
    @click.option("--linger-ms", type=click.IntRange(min=0), default=5, show_default=True,
                  help="How long the producer waits to fill a batch. Example: --linger-ms 20")
    @click.option("--batch-size", type=click.IntRange(min=1), default=1_000_000, show_default=True,
                  help="Most bytes per producer batch. Example: --batch-size 65536")
    @output_option()
    @connection_options
    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(**kwargs)
    return wrapper


@click.group("bench")
def bench_group() -> None:
    """Measure throughput and latency against a broker.

    \b
    Examples:
      tidelog bench produce --records 200000 --record-size 100
      tidelog bench e2e --records 20000 --rate 2000 --output json
    """


class _Run:
    """One bench invocation: its options, topic and clients."""

    def __init__(self, mode: str, kafka: Kafka, opts: dict) -> None:
        self.mode = mode
        self.kafka = kafka
        self.opts = opts
        self.records: int = opts["records"]
        self.size: int = opts["record_size"]
        self.topic: str = opts["topic"] or f"tidelog-bench-{uuid.uuid4().hex[:12]}"
        self.temporary = opts["topic"] is None

    def settings(self) -> dict:
        s = {"acks": self.opts["acks"], "compression": self.opts["compression"],
             "linger_ms": self.opts["linger_ms"], "batch_size": self.opts["batch_size"],
             "rate": f"{self.opts['rate']:g}/s" if self.opts["rate"] > 0 else "unlimited"}
        s["partitions"] = len(self.kafka.partitions(self.topic))
        return s

    def producer(self):
        return self.kafka.producer({"acks": self.opts["acks"], "compression.type": self.opts["compression"],
                                    "linger.ms": self.opts["linger_ms"], "batch.size": self.opts["batch_size"],
                                    "queue.buffering.max.messages": 1_000_000,
                                    "queue.buffering.max.kbytes": 1_048_576})

    def __enter__(self) -> "_Run":
        self._signals = terminate_as_interrupt()
        self._signals.__enter__()
        self.created = False
        try:
            self.kafka.metadata()
            if self.temporary:
                futures = self.kafka.admin().create_topics(
                    [NewTopic(self.topic, self.opts["partitions"], replication_factor=-1)],
                    request_timeout=REQUEST_TIMEOUT_S)
                self.kafka.wait(futures[self.topic], topic=self.topic)
                self.created = True
                self.kafka.metadata(refresh=True)
            self.kafka.partitions(self.topic)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.created:
                self._delete_topic()
        finally:
            self._signals.__exit__(None, None, None)

    def _delete_topic(self) -> None:
        try:
            futures = self.kafka.admin().delete_topics([self.topic], request_timeout=REQUEST_TIMEOUT_S)
            futures[self.topic].result(timeout=REQUEST_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - cleanup must not hide the run's own outcome
            note(f"warning: could not delete bench topic {self.topic}: {err}")

    def produce(self, bar: Bar, *, probes: bool = False) -> tuple[float, array, int]:
        """Send the records; returns (seconds, delivery latencies ms, failed deliveries)."""
        producer = self.producer()
        latencies = array("d")
        failed = 0

        def on_delivery(err, msg) -> None:
            nonlocal failed
            if err is not None:
                failed += 1
            else:
                latency = msg.latency()
                if latency is not None and latency >= 0:
                    latencies.append(latency * 1000)

        bodies = filler(self.size)
        # Connect and learn the partition leaders before the clock starts.
        self.kafka.retrying(lambda: producer.list_topics(self.topic, timeout=REQUEST_TIMEOUT_S), topic=self.topic)
        throttle = Throttle(self.opts["rate"], wait_fn=producer.poll)
        produce = producer.produce
        start = time.perf_counter()
        for i in range(self.records):
            throttle.wait(i)
            value = bodies[i % len(bodies)]
            if probes:
                value = make_probe(i, time.monotonic_ns(), value)
            while True:
                try:
                    produce(self.topic, value, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % _POLL_EVERY == _POLL_EVERY - 1:
                producer.poll(0)  # delivery reports: latency is read when the report is served
                bar.advance(_POLL_EVERY)
        bar.advance(self.records % _POLL_EVERY)
        _flush(producer)
        return time.perf_counter() - start, latencies, failed


def _flush(producer) -> None:
    remaining = producer.flush(REQUEST_TIMEOUT_S + 5)
    if remaining:
        raise CliError(f"{remaining} records were not acknowledged within {REQUEST_TIMEOUT_S:g}s: "
                       "is the broker overloaded?")


def _report(result: Result, output: str) -> None:
    if output == "json":
        emit_json(result.to_json())
    else:
        click.echo(render(result))
    if result.errors:
        raise CliError(f"{result.errors} of {result.records} records failed during the bench")


@bench_group.command("produce")
@bench_options
def produce_command(kafka: Kafka, output: str, **opts) -> None:
    """Producer throughput, and latency from send to the broker's acknowledgement.

    \b
    Example:  tidelog bench produce --records 100000 --record-size 1024 --partitions 3
    """
    with _Run("produce", kafka, opts) as run:
        with Bar("producing", total=run.records) as bar:
            seconds, latencies, failed = run.produce(bar)
        result = Result("produce", run.topic, run.records - failed, run.size, seconds, failed,
                        latency_summary(latencies), run.settings())
    _report(result, output)


@bench_group.command("consume")
@bench_options
def consume_command(kafka: Kafka, output: str, **opts) -> None:
    """Consumer throughput reading a topic from its beginning.

    A temporary topic is filled with --records first (not timed); with --topic
    the existing records are read (up to --records).

    \b
    Example:  tidelog bench consume --records 200000 --record-size 512
    """
    with _Run("consume", kafka, opts) as run:
        if run.temporary:
            with Bar("filling", total=run.records) as bar:
                _, _, failed = run.produce(bar)
            if failed:
                raise CliError(f"{failed} records failed while filling the bench topic")
        partitions = run.kafka.partitions(run.topic)
        consumer = kafka.consumer({"enable.auto.commit": False, "fetch.max.bytes": 52_428_800})
        try:
            marks = [kafka.watermarks(consumer, run.topic, p) for p in partitions]
            available = sum(max(0, hi - lo) for lo, hi in marks)
            wanted = min(run.records, available)
            if wanted == 0:
                raise CliError(f"topic {run.topic!r} has no records to read")
            received = size_sum = 0
            with Bar("consuming", total=wanted) as bar:
                start = time.perf_counter()  # before assign: the first fetch's round trip counts too
                consumer.assign([TopicPartition(run.topic, p, OFFSET_BEGINNING) for p in partitions])
                idle_since = time.monotonic()
                while received < wanted:
                    batch = consumer.consume(num_messages=1000, timeout=0.5)
                    got = 0
                    for msg in batch:
                        if msg.error() is None:
                            got += 1
                            size_sum += len(msg.value() or b"")
                    if got:
                        received += got
                        bar.advance(got)
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since > IDLE_LIMIT_S:
                        break
                seconds = time.perf_counter() - start
        finally:
            consumer.close()
        record_size = round(size_sum / received) if received else run.size
        result = Result("consume", run.topic, received, record_size, seconds, wanted - min(received, wanted), None,
                        run.settings())
    _report(result, output)


@bench_group.command("e2e")
@bench_options
def e2e_command(kafka: Kafka, output: str, **opts) -> None:
    """End-to-end latency: from send to receipt by a consumer, with both running at once.

    \b
    Example:  tidelog bench e2e --records 50000 --rate 5000 --record-size 256
    """
    if opts["record_size"] < PROBE_SIZE:
        raise click.UsageError(f"e2e needs --record-size of at least {PROBE_SIZE} (the payload carries a timestamp)")
    with _Run("e2e", kafka, opts) as run:
        partitions = run.kafka.partitions(run.topic)
        consumer = kafka.consumer({"enable.auto.commit": False, "fetch.wait.max.ms": 100})
        receiver = _Receiver(consumer, run.records)
        try:
            starts = [TopicPartition(run.topic, p, kafka.watermarks(consumer, run.topic, p)[1]) for p in partitions]
            consumer.assign(starts)
            consumer.consume(num_messages=1, timeout=0.5)  # connect and start fetching before the clock runs
            with Bar("received", total=run.records) as bar:
                receiver.on_progress = bar.set  # the bar follows receipts, from the receiver's thread
                receiver.start()
                _, _, failed = run.produce(Bar("sent", enabled=False), probes=True)
                receiver.expect(run.records - failed)
                while not receiver.done.wait(0.2):  # short waits keep Ctrl-C responsive
                    pass
        finally:
            receiver.stop()
            consumer.close()
        if receiver.error is not None:
            raise receiver.error
        latencies = receiver.latencies
        seconds = ((receiver.last_ns - receiver.first_sent_ns) / 1e9) if latencies else 0.0
        lost = run.records - failed - receiver.received
        result = Result("e2e", run.topic, receiver.received, run.size, seconds, failed + max(0, lost),
                        latency_summary(latencies), run.settings())
    _report(result, output)


class _Receiver(threading.Thread):
    """Consumes bench probes on its own thread (the client releases the GIL while it waits)."""

    def __init__(self, consumer, expected: int) -> None:
        super().__init__(name="bench-receiver", daemon=True)
        self.consumer = consumer
        self.expected = expected
        self.received = 0
        self.latencies = array("d")
        self.first_sent_ns: int | None = None
        self.last_ns = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._seen: set[int] = set()
        self.on_progress: Callable[[int], object] = lambda received: None

    def expect(self, count: int) -> None:
        """Lower the target once the producer knows how many records actually went out."""
        self.expected = count
        if self.received >= count:
            self.done.set()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        try:
            idle_since = time.monotonic()
            while not self._halt.is_set() and self.received < self.expected:
                got = self._take(self.consumer.consume(num_messages=1000, timeout=0.1))
                if got:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_LIMIT_S:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            self.done.set()

    def _take(self, batch) -> int:
        now = time.monotonic_ns()
        got = 0
        for msg in batch:
            if msg.error() is not None:
                continue
            probe = read_probe(msg.value())
            if probe is None or probe[0] in self._seen:
                continue  # someone else's record, or a duplicate after a retry
            seq, sent_ns = probe
            self._seen.add(seq)
            self.latencies.append((now - sent_ns) / 1e6)
            if self.first_sent_ns is None or sent_ns < self.first_sent_ns:
                self.first_sent_ns = sent_ns
            got += 1
        if got:
            self.received += got
            self.last_ns = now
            self.on_progress(self.received)
        return got
