"""`tidelog consume TOPIC`: records out as lines, plain or JSON.

Where reading starts:

* without ``--group``: the end of each partition (only new records), or where
  ``--from-beginning``, ``--offset`` or ``--from-time`` say;
* with ``--group`` alone: the group's committed offsets, as a member of the
  group (partitions are shared with other members); a partition with no
  commit starts at the end, or at the beginning with ``--from-beginning``;
* with ``--group`` and ``--partition``/``--offset``/``--from-time``: the
  partitions are assigned directly (no membership) and offsets are still
  committed to the group.

With a group, a record's offset is stored only after the record has been
written out, and stored offsets are committed on exit, including after
Ctrl-C: the next run continues after the last record printed (at least once).
With ``--from-beginning``, a partition the run printed nothing from is
committed at its log start, so the group's next run starts there as well.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager

import click
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_STORED, KafkaError, KafkaException, TopicPartition

from .common import TIMESTAMP, connection_options, note, output_option
from .errors import UNKNOWN_TOPIC, CliError, explain
from .kafka import REQUEST_TIMEOUT_S, Kafka
from .progress import Bar
from .record_format import record_to_json, record_to_plain

_BATCH = 500
_POLL_S = 0.2
_QUIET_ERRORS = {"_PARTITION_EOF", "_ALL_BROKERS_DOWN"}


@click.command("consume")
@click.argument("topic")
@click.option("-g", "--group", help="Consumer group: resume from its committed offsets and commit progress. "
                                   "Example: --group billing")
@click.option("--from-beginning", is_flag=True,
              help="Start at the oldest record (with --group: only where the group has no commit).")
@click.option("--offset", type=int, metavar="N",
              help="Start at offset N in each partition; negative N means the last |N| records. Example: --offset -10")
@click.option("--from-time", type=TIMESTAMP, metavar="ISO8601",
              help="Start at the first record at or after this time (no zone = local time). "
                   "Example: --from-time 2024-05-01T12:00:00Z")
@click.option("-p", "--partition", type=click.IntRange(min=0), help="Read only this partition. Example: --partition 2")
@click.option("-n", "--max-messages", type=click.IntRange(min=1), metavar="N",
              help="Exit after N records. Example: --max-messages 100")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Exit after S seconds without a record. Example: --timeout 5")
@output_option("plain", "json", default="plain")
@click.option("-K", "--key-separator", metavar="SEP",
              help="Plain output: print KEY SEP VALUE instead of the value alone. Example: --key-separator ' => '")
@connection_options
def consume_command(topic: str, group: str | None, from_beginning: bool, offset: int | None, from_time: int | None,
                    partition: int | None, max_messages: int | None, timeout: float | None, output: str,
                    key_separator: str | None, kafka: Kafka) -> None:
    """Print records from TOPIC, one per line, until Ctrl-C (or --max-messages / --timeout).

    \b
    Examples:
      tidelog consume orders --from-beginning
      tidelog consume orders --group billing --max-messages 10
      tidelog consume orders --offset -5 --output json
      tidelog consume orders --from-time 2024-05-01T00:00:00Z --timeout 3

    \b
    --output json prints one object per line:
      {"topic", "partition", "offset", "timestamp" (epoch ms), "timestamp_type",
       "key", "value", "headers": [{"key", "value"}]}
    A key or value that is not valid UTF-8 is base64 text, flagged by
    "key_encoding": "base64" / "value_encoding": "base64" (headers: "encoding").
    """
    starts = [name for name, given in (("--from-beginning", from_beginning), ("--offset", offset is not None),
                                       ("--from-time", from_time is not None)) if given]
    if len(starts) > 1:
        raise click.UsageError(f"{starts[0]} and {starts[1]} both choose where to start; use one")
    if key_separator is not None and output == "json":
        raise click.UsageError("--key-separator applies to plain output only")
    partitions = kafka.check_partition(topic, partition)
    membership = group is not None and partition is None and offset is None and from_time is None

    settings = {"enable.partition.eof": False, "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": group is not None, "enable.auto.offset.store": False}
    if group is not None:
        settings["group.id"] = group
    consumer = kafka.consumer(settings)
    writer = _Writer(output, key_separator.encode() if key_separator is not None else None)
    count = 0
    with _stop_on_signals() as stop:
        try:
            if membership:
                consumer.subscribe([topic])
            else:
                consumer.assign(_start_positions(kafka, consumer, topic, partitions, group=group,
                                                 from_beginning=from_beginning, offset=offset, from_time=from_time))
            count = _run(consumer, kafka, topic, writer, stop, group=group, max_messages=max_messages,
                         timeout=timeout)
        finally:
            try:
                writer.flush()
            finally:
                _finish(consumer, kafka, group, from_beginning=from_beginning)
    note(f"consumed {count} record{'s' if count != 1 else ''}")
    if stop.signum is not None:
        sys.exit(128 + stop.signum)  # 130 after Ctrl-C, 143 after SIGTERM: the shell's convention


def _start_positions(kafka: Kafka, consumer, topic: str, partitions: list[int], *, group: str | None,
                     from_beginning: bool, offset: int | None, from_time: int | None) -> list[TopicPartition]:
    if from_beginning:
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if offset is not None and offset >= 0:
        return [TopicPartition(topic, p, offset) for p in partitions]
    if offset is not None:
        out = []
        for p in partitions:
            low, high = kafka.watermarks(consumer, topic, p)
            out.append(TopicPartition(topic, p, max(low, high + offset)))
        return out
    if from_time is not None:
        found = kafka.retrying(lambda: consumer.offsets_for_times(
            [TopicPartition(topic, p, from_time) for p in partitions], timeout=REQUEST_TIMEOUT_S), topic=topic)
        # -1: no record at or after that time, so only future records qualify.
        return [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]
    default = OFFSET_STORED if group is not None else OFFSET_END
    return [TopicPartition(topic, p, default) for p in partitions]


def _run(consumer, kafka: Kafka, topic: str, writer: "_Writer", stop: "_Stop", *, group: str | None,
         max_messages: int | None, timeout: float | None) -> int:
    count = 0
    last_record = time.monotonic()
    warned: set[str] = set()
    with Bar(f"consuming {topic}", total=max_messages, enabled=None if max_messages else False,
             data_on_stdout=True) as bar:
        while not stop.requested:
            wanted = _BATCH if max_messages is None else min(_BATCH, max_messages - count)
            messages = consumer.consume(num_messages=wanted, timeout=_POLL_S)
            written = 0
            for msg in messages:
                err = msg.error()
                if err is not None:
                    _on_error(err, topic, warned)
                    continue
                writer.write(msg)
                if group is not None:
                    consumer.store_offsets(message=msg)
                written += 1
            if written:
                writer.flush()
                count += written
                bar.advance(written)
                last_record = time.monotonic()
                if max_messages is not None and count >= max_messages:
                    break
            elif timeout is not None and time.monotonic() - last_record >= timeout:
                break
            for err in kafka.take_errors():
                _on_error(err, topic, warned)
    return count


def _on_error(err: KafkaError, topic: str, warned: set[str]) -> None:
    name = err.name()
    if name in UNKNOWN_TOPIC:
        raise CliError(explain(name, err.str(), topic=topic), kafka_error=name)
    if err.fatal():
        raise CliError(explain(name, err.str(), topic=topic), kafka_error=name)
    if name in _QUIET_ERRORS or name in warned:
        return
    warned.add(name)  # once per kind: the client keeps retrying and would repeat itself
    note(f"warning: {explain(name, err.str(), topic=topic)}")


def _finish(consumer, kafka: Kafka, group: str | None, *, from_beginning: bool) -> None:
    """Commit what was printed, then leave the group; failures here are reported, not raised over."""
    try:
        if group is not None:
            try:
                consumer.commit(asynchronous=False)
                if from_beginning:
                    _commit_unread_starts(consumer, kafka)
            except (KafkaException, CliError) as exc:
                error = exc.args[0] if isinstance(exc, KafkaException) else None
                if error is None or error.code() != KafkaError._NO_OFFSET:
                    detail = explain(error.name(), error.str(), group=group) if error is not None else str(exc)
                    note(f"warning: could not commit offsets for group {group!r}: {detail}")
    finally:
        consumer.close()


def _commit_unread_starts(consumer, kafka: Kafka) -> None:
    """Commit the log start of each assigned partition the group has no offset for and this run
    printed nothing from, so the group's next run starts there too (--from-beginning) rather than
    at the end.  Without it, a record produced to such a partition after this run would be
    skipped by a later run without --from-beginning.  Nothing can be skipped by this: it is the
    oldest offset the partition has."""
    assigned = consumer.assignment()
    if not assigned:
        return
    printed = {(tp.topic, tp.partition) for tp in consumer.position(assigned) if tp.offset >= 0}
    unread = [tp for tp in consumer.committed(assigned, timeout=REQUEST_TIMEOUT_S)
              if tp.offset < 0 and (tp.topic, tp.partition) not in printed]
    starts = [TopicPartition(tp.topic, tp.partition, kafka.watermarks(consumer, tp.topic, tp.partition)[0])
              for tp in unread]
    if starts:
        consumer.commit(offsets=starts, asynchronous=False)


class _Writer:
    def __init__(self, output: str, key_separator: bytes | None) -> None:
        self.json = output == "json"
        self.key_separator = key_separator
        self.out = sys.stdout.buffer

    def write(self, msg) -> None:
        if self.json:
            ts_type, ts = msg.timestamp()
            line = record_to_json(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                  timestamp=ts if ts_type else None, timestamp_type=ts_type, key=msg.key(),
                                  value=msg.value(), headers=msg.headers())
            self.out.write(line.encode() + b"\n")
        else:
            self.out.write(record_to_plain(msg.key(), msg.value(), self.key_separator))

    def flush(self) -> None:
        self.out.flush()


class _Stop:
    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def _stop_on_signals():
    """Turn the first SIGINT/SIGTERM into a polite stop (commit, leave the group).

    A second signal gets the default behaviour back, so an impatient second
    Ctrl-C still ends a stuck shutdown.
    """
    stop = _Stop()
    previous = {}

    def handler(signum, _frame) -> None:
        stop.signum = signum
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue  # e.g. a background job of a script: the shell asked us to ignore Ctrl-C
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
