"""`tidelog topic create | list | describe | alter-config | delete`."""

from __future__ import annotations

import click
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, OffsetSpec

from .common import connection_options, emit_json, emit_table, output_option, parse_key_values
from .errors import UNKNOWN_TOPIC, CliError
from .kafka import REQUEST_TIMEOUT_S, Kafka


@click.group("topic")
def topic_group() -> None:
    """Create, inspect, reconfigure and delete topics.

    \b
    Example:  tidelog topic create orders --partitions 3 --config retention.ms=86400000
    """


@topic_group.command("create")
@click.argument("name")
@click.option("-p", "--partitions", type=click.IntRange(min=1), default=None,
              help="Number of partitions (default: the broker's default). Example: --partitions 6")
@click.option("-c", "--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic config, repeatable. Example: --config cleanup.policy=compact")
@click.option("--if-not-exists", is_flag=True, help="Succeed quietly if the topic already exists.")
@connection_options
def create_command(name: str, partitions: int | None, configs: tuple[str, ...], if_not_exists: bool,
                   kafka: Kafka) -> None:
    """Create topic NAME.

    \b
    Example:  tidelog topic create orders --partitions 3 --config retention.ms=3600000
    """
    settings = parse_key_values(configs, what="topic config")
    kafka.metadata()
    new = NewTopic(name, num_partitions=partitions if partitions is not None else -1, replication_factor=-1,
                   config=settings)
    futures = kafka.admin().create_topics([new], request_timeout=REQUEST_TIMEOUT_S)
    try:
        kafka.wait(futures[name], topic=name)
    except CliError as exc:
        if if_not_exists and exc.kafka_error == "TOPIC_ALREADY_EXISTS":
            click.echo(f"topic {name} already exists")
            return
        raise
    count = len(kafka.topic(name, refresh=True).partitions) if partitions is None else partitions
    click.echo(f"created topic {name} with {count} partition{'s' if count != 1 else ''}")


@topic_group.command("list")
@output_option()
@connection_options
def list_command(output: str, kafka: Kafka) -> None:
    """List topics with their partition counts.

    \b
    Example:  tidelog topic list --output json
    """
    topics = sorted(kafka.metadata().topics.values(), key=lambda t: t.topic)
    rows = [{"name": t.topic, "partitions": len(t.partitions)} for t in topics if t.error is None]
    if output == "json":
        emit_json(rows)
    elif rows:
        emit_table(["TOPIC", "PARTITIONS"], [[r["name"], r["partitions"]] for r in rows])


def log_offsets(kafka: Kafka, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """(log start, log end) per partition, through ListOffsets earliest/latest."""
    admin = kafka.admin()

    def ask(spec) -> dict[int, int]:
        futures = admin.list_offsets({TopicPartition(topic, p): spec for p in partitions},
                                     request_timeout=REQUEST_TIMEOUT_S)
        return {tp.partition: f.result(timeout=REQUEST_TIMEOUT_S + 5).offset for tp, f in futures.items()}

    start = kafka.retrying(lambda: ask(OffsetSpec.earliest()), topic=topic)
    end = kafka.retrying(lambda: ask(OffsetSpec.latest()), topic=topic)
    return {p: (start[p], end[p]) for p in partitions}


def describe_configs(kafka: Kafka, topic: str) -> dict[str, dict]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    futures = kafka.admin().describe_configs([resource], request_timeout=REQUEST_TIMEOUT_S)
    entries = kafka.wait(futures[resource], topic=topic)
    return {name: {"value": e.value, "default": bool(e.is_default), "read_only": bool(e.is_read_only),
                   "sensitive": bool(e.is_sensitive)}
            for name, e in sorted(entries.items())}


@topic_group.command("describe")
@click.argument("name")
@output_option()
@connection_options
def describe_command(name: str, output: str, kafka: Kafka) -> None:
    """Show NAME's partitions (leader, log start and end offsets) and configs.

    \b
    Example:  tidelog topic describe orders
    """
    meta = kafka.topic(name)
    parts = sorted(meta.partitions.values(), key=lambda p: p.id)
    offsets = log_offsets(kafka, name, [p.id for p in parts])
    configs = describe_configs(kafka, name)
    partitions = [{"partition": p.id, "leader": p.leader, "log_start_offset": offsets[p.id][0],
                   "log_end_offset": offsets[p.id][1],
                   "records": max(0, offsets[p.id][1] - offsets[p.id][0])} for p in parts]
    if output == "json":
        emit_json({"name": name, "partitions": partitions, "configs": configs})
        return
    click.echo(f"topic: {name}   partitions: {len(parts)}")
    click.echo()
    emit_table(["PARTITION", "LEADER", "LOG-START", "LOG-END", "RECORDS"],
               [[p["partition"], p["leader"], p["log_start_offset"], p["log_end_offset"], p["records"]]
                for p in partitions])
    click.echo()
    click.echo("configs (* = set on this topic):")
    emit_table(["  NAME", "VALUE", ""],
               [[f"  {k}", "(sensitive)" if c["sensitive"] else c["value"], "" if c["default"] else "*"]
                for k, c in configs.items()])


@topic_group.command("alter-config")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a topic config, repeatable. Example: --set retention.ms=3600000")
@click.option("--delete", "deletes", multiple=True, metavar="KEY",
              help="Return a config to its default, repeatable. Example: --delete retention.ms")
@connection_options
def alter_config_command(name: str, sets: tuple[str, ...], deletes: tuple[str, ...], kafka: Kafka) -> None:
    """Change NAME's configs; other configs are left as they are.

    \b
    Example:  tidelog topic alter-config orders --set retention.ms=3600000 --delete cleanup.policy
    """
    to_set = parse_key_values(sets, what="topic config")
    if not to_set and not deletes:
        raise click.UsageError("nothing to change: give --set KEY=VALUE and/or --delete KEY")
    clash = sorted(set(to_set) & set(deletes))
    if clash:
        raise click.UsageError(f"config {clash[0]!r} is both set and deleted")
    kafka.topic(name)
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in to_set.items()]
    entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in deletes]
    resource = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=entries)
    futures = kafka.admin().incremental_alter_configs([resource], request_timeout=REQUEST_TIMEOUT_S)
    for future in futures.values():
        kafka.wait(future, topic=name)
    changes = [f"set {k}={v}" for k, v in to_set.items()] + [f"reset {k}" for k in deletes]
    click.echo(f"updated topic {name}: {', '.join(changes)}")


@topic_group.command("delete")
@click.argument("name")
@click.option("--if-exists", is_flag=True, help="Succeed quietly if the topic does not exist.")
@connection_options
def delete_command(name: str, if_exists: bool, kafka: Kafka) -> None:
    """Delete topic NAME and all its records.

    \b
    Example:  tidelog topic delete orders
    """
    kafka.metadata()
    futures = kafka.admin().delete_topics([name], request_timeout=REQUEST_TIMEOUT_S)
    try:
        kafka.wait(futures[name], topic=name)
    except CliError as exc:
        if if_exists and exc.kafka_error in UNKNOWN_TOPIC:
            click.echo(f"topic {name} does not exist")
            return
        raise
    click.echo(f"deleted topic {name}")
