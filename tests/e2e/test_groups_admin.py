"""Group administration APIs through confluent-kafka's AdminClient, kafka-python's admin
client and raw requests: ListGroups (with a state filter), DescribeGroups,
DeleteGroups, OffsetDelete, multi-group OffsetFetch (v8) and batched
FindCoordinator (v4).

Three groups are set up once: ``active`` (one running member, Stable),
``idle`` (members came, committed and left: Empty) and ``simple`` (offsets
committed from outside any group, as ``alter_consumer_group_offsets`` and
manually assigned consumers do).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.groups import Consumption, Worker, create_topic, produce, wait_until
from tests.support.raw_kafka import RawClient, fetch_request, fetched, join_request

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated", category=DeprecationWarning)
    from kafka.protocol.admin import DescribeGroupsRequest
    from kafka.protocol.metadata import FindCoordinatorRequest

PARTITIONS = 3
GROUP_KEY, TRANSACTION_KEY = 0, 1

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def backend() -> str:
    return "embedded"


@dataclass
class Groups:
    bootstrap: str
    topic: str
    active: str
    idle: str
    simple: str
    member: Worker


def _confluent_admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def _kafka_python_admin(bootstrap: str):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="admin-test")


@pytest.fixture(scope="module")
def groups(broker, tmp_path_factory):
    bootstrap = broker.bootstrap
    topic = create_topic(bootstrap, PARTITIONS)
    produce(bootstrap, topic, PARTITIONS, 10)
    out = Path(tmp_path_factory.mktemp("admin"))
    idle = f"idle-{topic}"
    leaver = Worker("confluent", bootstrap, idle, topic, out).start()
    try:
        wait_until(lambda: Consumption.of([leaver]).covers(topic, PARTITIONS, 10), 60, "idle group consumed",
                   leaver.describe)
    finally:
        assert leaver.close() == 0, leaver.describe()

    simple = f"simple-{topic}"
    _commit_outside_group(bootstrap, simple, topic, offset=5)

    active = f"active-{topic}"
    member = Worker("confluent", bootstrap, active, topic, out).start()
    try:
        wait_until(lambda: Consumption.of([member]).covers(topic, PARTITIONS, 10), 60, "active group consumed",
                   member.describe)
        yield Groups(bootstrap, topic, active, idle, simple, member)
    finally:
        member.close()


def _listed(bootstrap: str, states=None) -> dict[str, object]:
    admin = _confluent_admin(bootstrap)  # the client must outlive its futures
    result = admin.list_consumer_groups(request_timeout=30, states=states).result(timeout=30)
    assert not result.errors, result.errors
    return {g.group_id: g for g in result.valid}


def test_list_groups_reports_states_and_filters_by_state(groups):
    from confluent_kafka import ConsumerGroupState

    everything = _listed(groups.bootstrap)
    assert {groups.active, groups.idle, groups.simple} <= set(everything)
    assert everything[groups.active].state == ConsumerGroupState.STABLE
    assert everything[groups.idle].state == ConsumerGroupState.EMPTY
    assert everything[groups.simple].state == ConsumerGroupState.EMPTY
    assert everything[groups.simple].is_simple_consumer_group
    assert not everything[groups.active].is_simple_consumer_group

    stable = _listed(groups.bootstrap, states={ConsumerGroupState.STABLE})
    assert groups.active in stable and groups.idle not in stable and groups.simple not in stable
    empty = _listed(groups.bootstrap, states={ConsumerGroupState.EMPTY})
    assert {groups.idle, groups.simple} <= set(empty) and groups.active not in empty

    admin = _kafka_python_admin(groups.bootstrap)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups(states_filter=["Stable"])}
        assert groups.active in listed and groups.idle not in listed
        assert listed[groups.active]["group_state"] == "Stable"
        assert listed[groups.active]["protocol_type"] == "consumer"
    finally:
        admin.close()


def test_describe_groups_shows_members_assignments_and_states(groups):
    from confluent_kafka import ConsumerGroupState

    unknown = f"never-{groups.topic}"
    admin = _confluent_admin(groups.bootstrap)
    futures = admin.describe_consumer_groups([groups.active, groups.idle, unknown], request_timeout=30)
    active = futures[groups.active].result(timeout=30)
    assert active.state == ConsumerGroupState.STABLE
    assert active.partition_assignor == "roundrobin"
    assert [m.client_id for m in active.members] == [groups.member.name]
    assert sorted(tp.partition for tp in active.members[0].assignment.topic_partitions) == list(range(PARTITIONS))
    idle = futures[groups.idle].result(timeout=30)
    assert idle.state == ConsumerGroupState.EMPTY and idle.members == []
    assert futures[unknown].result(timeout=30).state == ConsumerGroupState.DEAD

    kp_admin = _kafka_python_admin(groups.bootstrap)
    try:
        described = kp_admin.describe_groups([groups.active])
        (member,) = described[groups.active]["members"] if isinstance(described, dict) else described[0]["members"]
        assert member["client_id"] == groups.member.name
    finally:
        kp_admin.close()


def test_delete_groups_refuses_non_empty_and_unknown_groups(groups):
    from confluent_kafka import KafkaError, KafkaException

    unknown = f"never-{groups.topic}"
    doomed = f"doomed-{groups.topic}"
    _commit_outside_group(groups.bootstrap, doomed, groups.topic)
    admin = _confluent_admin(groups.bootstrap)
    futures = admin.delete_consumer_groups([groups.active, unknown, doomed], request_timeout=30)
    with pytest.raises(KafkaException) as non_empty:
        futures[groups.active].result(timeout=30)
    assert non_empty.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    with pytest.raises(KafkaException) as not_found:
        futures[unknown].result(timeout=30)
    assert not_found.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    futures[doomed].result(timeout=30)
    assert doomed not in _listed(groups.bootstrap)
    assert groups.active in _listed(groups.bootstrap)

    kp_admin = _kafka_python_admin(groups.bootstrap)
    try:
        assert kp_admin.delete_groups([groups.active, unknown]) == {groups.active: "NonEmptyGroupError",
                                                                     unknown: "GroupIdNotFoundError"}
        with RawClient(groups.bootstrap) as raw:
            assert fetched(raw.request(fetch_request({doomed: None})), doomed) == {}, "offsets went with the group"
    finally:
        kp_admin.close()


def _commit_outside_group(bootstrap: str, group: str, topic: str, offset: int = 7) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, offset) for p in range(PARTITIONS)])
    admin = _confluent_admin(bootstrap)
    admin.alter_consumer_group_offsets([request])[group].result(timeout=30)


def test_offset_delete_refuses_subscribed_topics_and_deletes_the_rest(groups):
    from kafka.errors import GroupIdNotFoundError, GroupSubscribedToTopicError, NoError
    from kafka.structs import TopicPartition

    admin = _kafka_python_admin(groups.bootstrap)
    try:
        refused = admin.delete_group_offsets(groups.active, [TopicPartition(groups.topic, 0)])
        assert refused == {TopicPartition(groups.topic, 0): GroupSubscribedToTopicError}
        loose = f"loose-{groups.topic}"
        _commit_outside_group(groups.bootstrap, loose, groups.topic)
        done = admin.delete_group_offsets(loose, [TopicPartition(groups.topic, 1)])
        assert done == {TopicPartition(groups.topic, 1): NoError}
        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group_offsets(f"never-{groups.topic}", [TopicPartition(groups.topic, 0)])
        with RawClient(groups.bootstrap) as raw:
            left = fetched(raw.request(fetch_request({loose: None})), loose)
            assert left == {(groups.topic, 0): 7, (groups.topic, 2): 7}
            kept = fetched(raw.request(fetch_request({groups.active: None})), groups.active)
            assert kept == {(groups.topic, p): 10 for p in range(PARTITIONS)}
    finally:
        admin.close()


def test_offset_fetch_answers_several_groups_in_one_request(groups):
    from kafka.structs import TopicPartition

    unknown = f"never-{groups.topic}"
    admin = _kafka_python_admin(groups.bootstrap)
    try:
        # kafka-python sends one OffsetFetch v8 for every group on the same coordinator.
        offsets = admin.list_group_offsets({groups.active: None, groups.simple: None, unknown: None})
    finally:
        admin.close()
    assert {tp: o.offset for tp, o in offsets[groups.active].items()} == {
        TopicPartition(groups.topic, p): 10 for p in range(PARTITIONS)}
    assert {tp: o.offset for tp, o in offsets[groups.simple].items()} == {
        TopicPartition(groups.topic, p): 5 for p in range(PARTITIONS)}
    assert offsets[unknown] == {}

    with RawClient(groups.bootstrap) as raw:
        wanted = [(groups.topic, 0), (groups.topic, 2)]
        response = raw.request(fetch_request({groups.simple: wanted, unknown: wanted}))
    assert fetched(response, groups.simple) == {(groups.topic, 0): 5, (groups.topic, 2): 5}
    assert fetched(response, unknown) == {(groups.topic, 0): -1, (groups.topic, 2): -1}


def test_find_coordinator_v4_answers_a_batch_of_keys(groups):
    host, port = groups.bootstrap.rsplit(":", 1)
    keys = [groups.active, groups.idle, f"never-{groups.topic}"]
    with RawClient(groups.bootstrap) as raw:
        response = raw.request(FindCoordinatorRequest[4](key_type=GROUP_KEY, coordinator_keys=keys))
        assert [(c.key, c.error_code, c.host, c.port) for c in response.coordinators] == [
            (k, 0, host, int(port)) for k in keys]
        assert all(c.node_id == response.coordinators[0].node_id >= 0 for c in response.coordinators)
        legacy = raw.request(FindCoordinatorRequest[2](key_type=GROUP_KEY, key=groups.active))
        assert (legacy.error_code, legacy.host, legacy.port) == (0, host, int(port))


def test_join_errors_and_mid_rebalance_descriptions_have_kafkas_shape(groups):
    """Before v7 a JoinGroup answer's protocol name is not nullable, so an error carries "";
    DescribeGroups shows no protocol or assignments until the group is Stable."""
    group = f"shapes-{groups.topic}"
    with RawClient(groups.bootstrap) as raw:
        first = raw.request(join_request(group, "", [groups.topic], version=5))
        assert (first.error_code, first.protocol_name) == (79, "")
        later = raw.request(join_request(f"{group}-v7", "", [groups.topic], version=7))
        assert (later.error_code, later.protocol_name) == (79, None)
        joined = raw.request(join_request(group, first.member_id, [groups.topic], version=5))
        assert joined.error_code == 0 and joined.protocol_name == "range"
        (described,) = raw.request(DescribeGroupsRequest[4](groups=[group],
                                                            include_authorized_operations=False)).groups
        assert described.group_state == "CompletingRebalance" and described.protocol_data == ""
        assert [(m.member_id, m.member_assignment) for m in described.members] == [(first.member_id, b"")]
