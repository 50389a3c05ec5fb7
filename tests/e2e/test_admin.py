"""Topic administration and cluster metadata through real admin clients.

confluent-kafka's AdminClient drives CreateTopics, DeleteTopics,
CreatePartitions, DescribeConfigs, IncrementalAlterConfigs and
DescribeCluster; kafka-python's KafkaAdminClient cross-checks the cluster
view; raw Metadata v12 requests check topic ids.  Auto-creation is off by
default and on with ``--auto-create-topics``.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)
from kafka.protocol.metadata import MetadataRequest, MetadataResponse

from .clients import Rec, consume, produce, watermarks
from .raw import Raw

UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION, TOPIC_ALREADY_EXISTS = 3, 17, 36
INVALID_PARTITIONS, INVALID_CONFIG = 37, 40


def admin(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def name() -> str:
    return f"adm-{uuid.uuid4().hex[:10]}"


def create(client: AdminClient, topic: str, partitions: int = 1, **configs: str) -> None:
    client.create_topics([NewTopic(topic, partitions, 1, config=configs)])[topic].result(30)


def error_code(exc: KafkaException) -> int:
    return exc.args[0].code()


def metadata_v12(broker, topics: list[tuple[str | None, object]]):
    R = MetadataRequest[12]
    conn = Raw(broker.port)
    try:
        return conn.call(R(topics=[R.MetadataRequestTopic(name=n, topic_id=i) for n, i in topics],
                           allow_auto_topic_creation=True, include_topic_authorized_operations=False),
                         MetadataResponse[12])
    finally:
        conn.close()


def test_create_describe_and_delete_topics(broker) -> None:
    client = admin(broker)
    topic = name()
    create(client, topic, 3, **{"retention.ms": "3600000"})
    with pytest.raises(KafkaException) as exc:
        create(client, topic)
    assert error_code(exc.value) == TOPIC_ALREADY_EXISTS

    described = client.describe_topics(TopicCollection([topic]))[topic].result(30)
    assert described.name == topic and len(described.partitions) == 3
    assert all(p.leader is not None and p.leader.id == 0 for p in described.partitions)
    assert str(described.topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA")
    assert topic in client.list_topics(timeout=30).topics

    client.delete_topics([topic])[topic].result(30)
    assert topic not in client.list_topics(timeout=30).topics
    with pytest.raises(KafkaException) as exc:
        client.delete_topics([topic])[topic].result(30)
    assert error_code(exc.value) == UNKNOWN_TOPIC_OR_PARTITION


def test_recreated_topic_starts_empty_with_a_new_id(broker) -> None:
    client = admin(broker)
    topic = name()
    create(client, topic)
    produce("confluent", broker.bootstrap, topic, [Rec(b"k", b"old")])
    first_id = client.describe_topics(TopicCollection([topic]))[topic].result(30).topic_id
    client.delete_topics([topic])[topic].result(30)
    create(client, topic)
    assert client.describe_topics(TopicCollection([topic]))[topic].result(30).topic_id != first_id
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0)
    assert produce("kafka-python", broker.bootstrap, topic, [Rec(b"k", b"new")]) == [(0, 0)]


@pytest.mark.parametrize("bad", [{"num_partitions": 0}, {"config": {"retention.ms": "soon"}},
                                 {"config": {"no.such.config": "1"}}, {"name": "bad name"}],
                         ids=["zero-partitions", "bad-config-value", "unknown-config", "bad-name"])
def test_create_topics_refusals(broker, bad: dict) -> None:
    client = admin(broker)
    topic = bad.get("name", name())
    new = NewTopic(topic, bad.get("num_partitions", 1), 1, config=bad.get("config", {}))
    with pytest.raises(KafkaException) as exc:
        client.create_topics([new])[topic].result(30)
    assert error_code(exc.value) in {INVALID_PARTITIONS, INVALID_CONFIG, INVALID_TOPIC_EXCEPTION,
                                     KafkaError.INVALID_PARTITIONS, KafkaError.INVALID_CONFIG}
    assert topic not in client.list_topics(timeout=30).topics


def test_create_partitions_then_produce_to_the_new_ones(broker) -> None:
    client = admin(broker)
    topic = name()
    create(client, topic, 1)
    client.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
    assert len(client.list_topics(topic, timeout=30).topics[topic].partitions) == 3
    for p in range(3):
        assert produce("confluent", broker.bootstrap, topic, [Rec(b"k", f"p{p}".encode(), partition=p)]) == [(p, 0)]
        assert [g.value for g in consume("aiokafka", broker.bootstrap, topic, p, 1)] == [f"p{p}".encode()]
    with pytest.raises(KafkaException) as exc:
        client.create_partitions([NewPartitions(topic, 2)])[topic].result(30)  # shrinking is refused
    assert error_code(exc.value) == INVALID_PARTITIONS


def test_describe_and_alter_configs(broker) -> None:
    client = admin(broker)
    topic = name()
    create(client, topic, 1, **{"retention.ms": "7200000"})
    resource = ConfigResource("topic", topic)
    configs = client.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "7200000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["max.message.bytes"].value == "1048588" and configs["max.message.bytes"].is_default
    assert configs["cleanup.policy"].value == "delete"

    change = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    client.incremental_alter_configs([change])[change].result(30)
    configs = client.describe_configs([resource])[resource].result(30)
    assert configs["retention.bytes"].value == "1048576" and not configs["retention.bytes"].is_default
    assert configs["retention.ms"].value == "604800000" and configs["retention.ms"].is_default

    bad = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.ms", "forever", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as exc:
        client.incremental_alter_configs([bad])[bad].result(30)
    assert error_code(exc.value) == INVALID_CONFIG

    missing = ConfigResource("topic", name())
    with pytest.raises(KafkaException) as exc:
        client.describe_configs([missing])[missing].result(30)
    assert error_code(exc.value) == UNKNOWN_TOPIC_OR_PARTITION


def test_max_message_bytes_change_takes_effect_for_producers(broker) -> None:
    client = admin(broker)
    topic = name()
    create(client, topic)
    big = [Rec(b"k", b"x" * 1_200_000)]
    with pytest.raises(AssertionError):
        produce("kafka-python", broker.bootstrap, topic, big, max_request_bytes=4 << 20)
    change = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(2 << 20), incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([change])[change].result(30)
    assert produce("kafka-python", broker.bootstrap, topic, big, max_request_bytes=4 << 20) == [(0, 0)]


def test_describe_cluster_with_both_admin_clients(broker) -> None:
    client = admin(broker)  # keep the handle alive until the future resolves
    cluster = client.describe_cluster().result(30)
    assert cluster.cluster_id == "tidelog"
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(0, "127.0.0.1", broker.port)]
    assert cluster.controller.id == 0

    from kafka import KafkaAdminClient

    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = kp.describe_cluster()
        assert described["cluster_id"] == "tidelog"
        assert described["controller_id"] == 0
        assert [(b["broker_id"], b["port"]) for b in described["brokers"]] == [(0, broker.port)]
        # kafka-python's own topic administration against the same broker.
        from kafka.admin import NewTopic as KpNewTopic
        from kafka.errors import TopicAlreadyExistsError

        topic = name()
        kp.create_topics([KpNewTopic(topic, 2, 1, topic_configs={"retention.ms": "60000"})])
        with pytest.raises(TopicAlreadyExistsError):
            kp.create_topics([KpNewTopic(topic, 2, 1)])
        assert topic in kp.list_topics()
        kp.delete_topics([topic])
        assert topic not in kp.list_topics()
    finally:
        kp.close()


def test_metadata_carries_topic_ids(broker) -> None:
    client = admin(broker)
    topic = name()
    create(client, topic, 2)
    expected = client.describe_topics(TopicCollection([topic]))[topic].result(30).topic_id
    response = metadata_v12(broker, [(topic, None)])
    (entry,) = response.topics
    assert entry.error_code == 0 and entry.name == topic
    assert str(entry.topic_id) != "00000000-0000-0000-0000-000000000000"
    assert entry.topic_id.bytes == bytes.fromhex(_uuid_hex(expected))
    assert sorted(p.partition_index for p in entry.partitions) == [0, 1]
    assert response.cluster_id == "tidelog" and response.controller_id == 0


def _uuid_hex(topic_id) -> str:
    """confluent-kafka's Uuid as 32 hex digits (it prints base64)."""
    import base64

    text = str(topic_id)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).hex()


def test_auto_create_is_off_by_default(broker) -> None:
    topic = name()
    response = metadata_v12(broker, [(topic, None)])  # the request allows auto-creation...
    assert [(t.name, t.error_code) for t in response.topics] == [(topic, UNKNOWN_TOPIC_OR_PARTITION)]
    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "topic.metadata.propagation.max.ms": 200,
                         "message.timeout.ms": 10_000})
    producer.produce(topic, b"x", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert [e.code() for e in errors] == [KafkaError.UNKNOWN_TOPIC_OR_PART]
    assert topic not in admin(broker).list_topics(timeout=30).topics  # ...but the broker does not create it


def test_auto_create_when_enabled(brokers) -> None:
    broker = brokers.start(extra_args=["--auto-create-topics"])
    topics = [name(), name()]
    assert produce("kafka-python", broker.bootstrap, topics[0], [Rec(b"k", b"auto")]) == [(0, 0)]
    assert produce("confluent", broker.bootstrap, topics[1], [Rec(b"k", b"auto")]) == [(0, 0)]
    listed = admin(broker).list_topics(timeout=30).topics
    assert all(t in listed and len(listed[t].partitions) == 1 for t in topics)
    # An illegal name is refused, not created.
    response = metadata_v12(broker, [("not a topic", None)])
    assert [(t.name, t.error_code) for t in response.topics] == [("not a topic", INVALID_TOPIC_EXCEPTION)]
