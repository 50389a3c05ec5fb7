"""`tidelog produce TOPIC`: lines of text in, records out.

Every input line is accounted for: it is either delivered (acknowledged by the
broker as ``--acks`` asks) or reported by line number with the reason, and
any failure makes the exit status 1.  A bad line does not stop the run; the
lines after it are still sent.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from confluent_kafka import KafkaError

from .common import connection_options, note, parse_key_value, stdin_is_tty, terminate_as_interrupt
from .errors import EXIT_INTERRUPTED, CliError, explain
from .kafka import Kafka
from .progress import Bar
from .record_format import InputError, OutgoingRecord, parse_json, parse_plain

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = ("0", "1", "all")
DELIVERY_TIMEOUT_MS = 30_000
_SHOWN_FAILURES = 20


class Outcome:
    """Delivered count and failures by input line; fed by delivery reports."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failures: list[tuple[int, str]] = []
        self.pending: set[int] = set()

    def fail(self, line: int, reason: str) -> None:
        self.failures.append((line, reason))

    def sending(self, line: int, topic: str):
        """Register input ``line`` as in flight; returns its delivery callback."""
        self.pending.add(line)

        def on_delivery(err: KafkaError | None, _msg) -> None:
            self.pending.discard(line)
            if err is None:
                self.delivered += 1
            else:
                self.fail(line, explain(err.name(), err.str(), topic=topic))
        return on_delivery

    def abandon_pending(self) -> None:
        for line in sorted(self.pending):
            self.fail(line, "not acknowledged by the broker in time")
        self.pending.clear()

    def summary_error(self) -> str:
        total = self.delivered + len(self.failures)
        if len(self.failures) == 1:
            line, reason = self.failures[0]
            return f"1 of {total} records failed (line {line}: {reason})"
        lines = ", ".join(str(line) for line, _ in sorted(self.failures)[:10])
        more = ", ..." if len(self.failures) > 10 else ""
        return f"{len(self.failures)} of {total} records failed (lines {lines}{more}; reasons above)"


@click.command("produce")
@click.argument("topic")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read records from this file instead of stdin. Example: --file events.txt")
@click.option("-k", "--key", help="Key for every record. Example: --key user-42")
@click.option("-K", "--key-separator", metavar="SEP",
              help="Split each line at the first SEP into key and value. Example: --key-separator ':'")
@click.option("-H", "--header", "headers", multiple=True, metavar="KEY=VALUE",
              help="Header added to every record, repeatable. Example: --header source=cli")
@click.option("--json", "json_input", is_flag=True,
              help='Each line is a JSON object with key, value, headers and partition (the format of '
                   '`consume -o json`). Example line: {"key": "k1", "value": "hello", "headers": {"h": "v"}}')
@click.option("-p", "--partition", type=click.IntRange(min=0),
              help="Send every record to this partition (default: by key, else spread). Example: --partition 0")
@click.option("-z", "--compression", type=click.Choice(COMPRESSIONS), default="none", show_default=True,
              help="Batch compression. Example: --compression zstd")
@click.option("--acks", type=click.Choice(ACKS), default="all", show_default=True,
              help="Acknowledgement to wait for: 0 none, 1 leader, all every replica. Example: --acks 1")
@connection_options
def produce_command(topic: str, path: Path | None, key: str | None, key_separator: str | None,
                    headers: tuple[str, ...], json_input: bool, partition: int | None, compression: str,
                    acks: str, kafka: Kafka) -> None:
    """Send lines from stdin (or --file) to TOPIC, one record per line.

    \b
    Examples:
      echo hello | tidelog produce orders
      printf 'user-1:{"total": 12}\\n' | tidelog produce orders --key-separator :
      tidelog produce orders --file events.jsonl --json --compression zstd
      tidelog consume a -o json --from-beginning --timeout 2 | tidelog produce b --json

    Prints how many records were delivered; exits 1 if any failed, naming the
    input lines and why.
    """
    if json_input and (key is not None or key_separator is not None):
        raise click.UsageError("--json takes keys from the input; drop --key/--key-separator")
    if key is not None and key_separator is not None:
        raise click.UsageError("use either --key or --key-separator, not both")
    if key_separator == "":
        raise click.UsageError("--key-separator must not be empty")
    extra_headers = [(k, v.encode()) for k, v in (parse_key_value(h, what="header") for h in headers)]
    partitions = kafka.partitions(topic)
    if partition is not None and partition not in partitions:
        raise CliError(f"topic {topic!r} has no partition {partition}: it has partitions 0..{len(partitions) - 1}")

    producer = kafka.producer({"acks": acks, "compression.type": compression, "linger.ms": 5,
                               "message.timeout.ms": DELIVERY_TIMEOUT_MS})
    outcome = Outcome()
    key_bytes = key.encode() if key is not None else None
    sep_bytes = key_separator.encode() if key_separator is not None else None

    def to_record(line: bytes) -> OutgoingRecord | None:
        if json_input:
            return parse_json(line)
        return parse_plain(line, key=key_bytes, key_separator=sep_bytes)

    interrupted = False
    source = path.open("rb") if path else sys.stdin.buffer
    if path is None and stdin_is_tty():
        note("reading records from the terminal, one per line; finish with Ctrl-D")
    try:
        size = path.stat().st_size if path else None
        with terminate_as_interrupt(), Bar(f"producing to {topic}", total=size, unit="bytes",
                                           enabled=None if path else False) as bar:
            for lineno, line in enumerate(source, 1):
                bar.advance(len(line))
                try:
                    record = to_record(line)
                except InputError as exc:
                    outcome.fail(lineno, str(exc))
                    continue
                if record is None:
                    continue
                target = record.partition if record.partition is not None else partition
                if target is not None and target not in partitions:
                    outcome.fail(lineno, f"partition {target} does not exist (topic has {len(partitions)})")
                    continue
                _send(producer, topic, record, target, extra_headers, outcome.sending(lineno, topic))
    except KeyboardInterrupt:
        interrupted = True
        note("interrupted: waiting up to 5 s for records already sent")
    finally:
        if path:
            source.close()
    _drain(producer, 5.0 if interrupted else DELIVERY_TIMEOUT_MS / 1000 + 5)
    outcome.abandon_pending()

    click.echo(f"delivered {outcome.delivered} record{'s' if outcome.delivered != 1 else ''} to {topic}")
    if outcome.failures:
        if len(outcome.failures) > 1:
            for line, reason in sorted(outcome.failures)[:_SHOWN_FAILURES]:
                note(f"line {line}: {reason}")
            if len(outcome.failures) > _SHOWN_FAILURES:
                note(f"... and {len(outcome.failures) - _SHOWN_FAILURES} more")
        raise CliError(outcome.summary_error(), exit_code=EXIT_INTERRUPTED if interrupted else 1)
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _send(producer, topic: str, record: OutgoingRecord, partition: int | None,
          extra_headers: list[tuple[str, bytes]], on_delivery) -> None:
    kwargs = {"value": record.value, "key": record.key, "on_delivery": on_delivery}
    if partition is not None:
        kwargs["partition"] = partition
    if record.timestamp is not None:
        kwargs["timestamp"] = record.timestamp
    all_headers = extra_headers + record.headers
    if all_headers:
        kwargs["headers"] = all_headers
    while True:
        try:
            producer.produce(topic, **kwargs)
            break
        except BufferError:  # local queue full: let deliveries drain, then retry
            producer.poll(0.05)
    producer.poll(0)


def _drain(producer, timeout: float) -> int:
    """Wait for outstanding deliveries; the number still unacknowledged at the deadline."""
    deadline = time.monotonic() + timeout
    remaining = producer.flush(0)
    while remaining and time.monotonic() < deadline:
        remaining = producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
    return remaining
