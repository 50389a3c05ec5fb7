"""`tidelog group list | describe | reset-offsets | delete`: consumer groups."""

from __future__ import annotations

import time

import click
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from .common import TIMESTAMP, connection_options, emit_json, emit_table, note, output_option
from .errors import CliError, from_kafka
from .kafka import REQUEST_TIMEOUT_S, RETRIABLE, Kafka
from .offset_plan import lag, plan_reset

# Kafka's own spelling of group states, as kafka-consumer-groups prints them.
STATE_NAMES = {
    ConsumerGroupState.UNKNOWN: "Unknown",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.EMPTY: "Empty",
}


def _state(obj) -> str:
    return STATE_NAMES.get(getattr(obj, "state", ConsumerGroupState.UNKNOWN), "Unknown")


@click.group("group")
def group_group() -> None:
    """Inspect consumer groups, move their offsets, delete them.

    \b
    Example:  tidelog group describe billing
    """


@group_group.command("list")
@output_option()
@connection_options
def list_command(output: str, kafka: Kafka) -> None:
    """List consumer groups and their states.

    \b
    Example:  tidelog group list --output json
    """
    kafka.metadata()
    result = kafka.wait(kafka.admin().list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S))
    if result.errors and not result.valid:
        raise from_kafka(result.errors[0], bootstrap=kafka.bootstrap)
    for err in result.errors or []:
        note(f"warning: a broker did not list its groups: {err}")
    rows = sorted(({"group": g.group_id, "state": _state(g),
                    "type": "simple" if g.is_simple_consumer_group else "consumer"}
                   for g in result.valid or []), key=lambda r: r["group"])
    if output == "json":
        emit_json(rows)
    elif rows:
        emit_table(["GROUP", "STATE", "TYPE"], [[r["group"], r["state"], r["type"]] for r in rows])


def _describe(kafka: Kafka, group: str):
    futures = kafka.admin().describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)
    return kafka.wait(futures[group], group=group)


def _committed(kafka: Kafka, group: str, partitions: list[TopicPartition] | None = None) -> dict[tuple[str, int], int]:
    request = ConsumerGroupTopicPartitions(group, partitions)
    futures = kafka.admin().list_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_S)
    result = kafka.wait(futures[group], group=group)
    out = {}
    for tp in result.topic_partitions or []:
        if tp.error is None and tp.offset >= 0:
            out[(tp.topic, tp.partition)] = tp.offset
    return out


def _list_offsets(kafka: Kafka, specs: dict[TopicPartition, object]) -> dict[tuple[str, int], int | None]:
    """ListOffsets for several partitions.  Transient failures are retried for a
    while; a partition that keeps failing (e.g. its topic was deleted) maps to None."""
    out: dict[tuple[str, int], int | None] = {}
    deadline = time.monotonic() + 10
    while specs:
        futures = kafka.admin().list_offsets(specs, request_timeout=REQUEST_TIMEOUT_S)
        again = {}
        for tp, future in futures.items():
            key = (tp.topic, tp.partition)
            try:
                out[key] = future.result(timeout=REQUEST_TIMEOUT_S + 5).offset
            except KafkaException as exc:
                err = exc.args[0]
                out[key] = None
                if (err.retriable() or err.name() in RETRIABLE) and time.monotonic() < deadline:
                    again[tp] = specs[tp]
        specs = again
        if specs:
            time.sleep(0.2)
    return out


@group_group.command("describe")
@click.argument("group")
@output_option()
@connection_options
def describe_command(group: str, output: str, kafka: Kafka) -> None:
    """Show GROUP's state, members and assignment, and per partition its committed offset, end offset and lag.

    \b
    Example:  tidelog group describe billing
    """
    kafka.metadata()
    desc = _describe(kafka, group)
    committed = _committed(kafka, group)
    if desc.state == ConsumerGroupState.DEAD and not committed:
        raise CliError(f"group {group!r} does not exist: list groups with `tidelog group list`",
                       kafka_error="GROUP_ID_NOT_FOUND")
    owner: dict[tuple[str, int], str] = {}
    members = []
    for m in desc.members or []:
        assigned = sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else []))
        for key in assigned:
            owner[key] = m.member_id
        members.append({"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                        "group_instance_id": m.group_instance_id,
                        "assignment": [{"topic": t, "partition": p} for t, p in assigned]})
    keys = sorted(set(committed) | set(owner))
    ends = _list_offsets(kafka, {TopicPartition(t, p): OffsetSpec.latest() for t, p in keys})
    offsets = [{"topic": t, "partition": p, "committed_offset": committed.get((t, p)),
                "log_end_offset": ends.get((t, p)), "lag": lag(committed.get((t, p)), ends.get((t, p))),
                "member_id": owner.get((t, p))} for t, p in keys]
    total_lag = sum(o["lag"] for o in offsets if o["lag"] is not None)
    doc = {"group": group, "state": _state(desc), "protocol": desc.partition_assignor or None,
           "coordinator": desc.coordinator.id if desc.coordinator is not None else None,
           "members": members, "offsets": offsets, "total_lag": total_lag}
    if output == "json":
        emit_json(doc)
        return
    click.echo(f"group: {group}   state: {doc['state']}   protocol: {doc['protocol'] or '-'}   "
               f"members: {len(members)}   coordinator: {doc['coordinator']}   total lag: {total_lag}")
    if members:
        click.echo()
        emit_table(["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"],
                   [[m["member_id"], m["client_id"], m["host"],
                     ",".join(f"{a['topic']}:{a['partition']}" for a in m["assignment"]) or "-"] for m in members])
    if offsets:
        click.echo()
        emit_table(["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER"],
                   [[o["topic"], o["partition"], o["committed_offset"], o["log_end_offset"], o["lag"],
                     o["member_id"]] for o in offsets])


@group_group.command("reset-offsets")
@click.argument("group")
@click.option("-t", "--topic", required=True, help="Topic whose offsets move. Example: --topic orders")
@click.option("-p", "--partition", "only_partition", type=click.IntRange(min=0),
              help="Move only this partition (default: all). Example: --partition 0")
@click.option("--to-earliest", is_flag=True, help="Move to the oldest record.")
@click.option("--to-latest", is_flag=True, help="Move to the end (skip everything unread).")
@click.option("--to-offset", type=click.IntRange(min=0), metavar="N",
              help="Move to offset N (clamped to the log). Example: --to-offset 1000")
@click.option("--to-datetime", type=TIMESTAMP, metavar="ISO8601",
              help="Move to the first record at or after this time (no zone = local time). "
                   "Example: --to-datetime 2024-05-01T00:00:00Z")
@click.option("--dry-run", is_flag=True, help="Show the new offsets without committing them.")
@output_option()
@connection_options
def reset_offsets_command(group: str, topic: str, only_partition: int | None, to_earliest: bool, to_latest: bool,
                          to_offset: int | None, to_datetime: int | None, dry_run: bool, output: str,
                          kafka: Kafka) -> None:
    """Move GROUP's committed offsets on a topic. The group must have no active members.

    \b
    Examples:
      tidelog group reset-offsets billing --topic orders --to-earliest --dry-run
      tidelog group reset-offsets billing --topic orders --to-datetime 2024-05-01T00:00:00Z
    """
    chosen = [s for s, given in (("earliest", to_earliest), ("latest", to_latest),
                                 ("offset", to_offset is not None), ("datetime", to_datetime is not None)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime")
    strategy = chosen[0]
    partitions = kafka.check_partition(topic, only_partition)
    try:
        desc = _describe(kafka, group)
        members = len(desc.members or [])
    except CliError as exc:
        if exc.kafka_error != "GROUP_ID_NOT_FOUND":
            raise
        members = 0  # a group that does not exist yet can be given offsets
    if members:
        raise CliError(f"group {group!r} has {members} active member{'s' if members != 1 else ''}: "
                       "stop its consumers first (offsets can only be reset while the group is inactive)")
    tps = [TopicPartition(topic, p) for p in partitions]
    current = _committed(kafka, group, tps)
    earliest = _list_offsets(kafka, {TopicPartition(topic, p): OffsetSpec.earliest() for p in partitions})
    latest = _list_offsets(kafka, {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions})
    at_time = {}
    if strategy == "datetime":
        at_time = _list_offsets(kafka, {TopicPartition(topic, p): OffsetSpec.for_timestamp(to_datetime)
                                        for p in partitions})
    plan = []
    for p in partitions:
        lo, hi = earliest.get((topic, p)), latest.get((topic, p))
        if lo is None or hi is None:
            raise CliError(f"could not read the offsets of {topic}:{p}: is the topic being deleted?")
        plan.append(plan_reset(strategy, partition=p, earliest=lo, latest=hi, current=current.get((topic, p)),
                               offset=to_offset, at_time=at_time.get((topic, p))))
    if not dry_run:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, r.partition, r.new) for r in plan])
        futures = kafka.admin().alter_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_S)
        result = kafka.wait(futures[group], group=group, topic=topic)
        for tp in result.topic_partitions or []:
            if tp.error is not None:
                raise from_kafka(tp.error, group=group, topic=topic)
    rows = [{"topic": topic, "partition": r.partition, "current_offset": r.current, "new_offset": r.new,
             "note": r.note or None} for r in plan]
    if output == "json":
        emit_json({"group": group, "topic": topic, "dry_run": dry_run, "partitions": rows})
        return
    emit_table(["TOPIC", "PARTITION", "CURRENT", "NEW", "NOTE"],
               [[r["topic"], r["partition"], r["current_offset"], r["new_offset"], r["note"] or ""] for r in rows])
    click.echo(f"dry run: group {group} unchanged" if dry_run else f"reset offsets of group {group} on {topic}")


@group_group.command("delete")
@click.argument("group")
@connection_options
def delete_command(group: str, kafka: Kafka) -> None:
    """Delete GROUP and its committed offsets. The group must have no active members.

    \b
    Example:  tidelog group delete billing
    """
    kafka.metadata()
    futures = kafka.admin().delete_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)
    kafka.wait(futures[group], group=group)
    click.echo(f"deleted group {group}")
