"""Consumer groups with real clients: exactly-once splitting, leaving, crashing, timeouts,
static membership and cooperative rebalancing, against a real broker on the embedded store.

Members are subprocesses (`tests.support.group_worker`) mixing confluent-kafka,
kafka-python and aiokafka; each logs what it consumed and committed, and the
tests assert on those logs.  The only time bounds are generous upper bounds
("rebalances within the session timeout" means within 2 x session timeout +
5 s), never speeds.
"""

from __future__ import annotations

import time

import pytest

from tests.support.groups import (
    PARTITIONS,
    Consumption,
    Feeder,
    Worker,
    committed,
    create_topic,
    describe_all,
    produce,
    split_evenly,
    start,
    three_clients_read_every_record_once,
    wait_until,
    workers,  # noqa: F401 - fixture
)

SESSION_MS = 6000
REBALANCE_BOUND_S = 2 * SESSION_MS / 1000 + 5
# Who stays when a member of each client library goes, so every library plays both parts.
PARTNER = {"confluent": "aiokafka", "kafka-python": "confluent", "aiokafka": "kafka-python"}
# librdkafka's text for FENCED_INSTANCE_ID (82); it surfaces the error as _FATAL with this text.
FENCED_INSTANCE_TEXT = "Static consumer fenced by other consumer with same group.instance.id"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def backend() -> str:
    """These scenarios run on the embedded store; `test_groups_aws` runs the core one on S3 + DynamoDB."""
    return "embedded"


def assert_no_skips_and_only_uncommitted_rereads(members: list[Worker], feeder: Feeder) -> None:
    """Every produced offset was read, and a record read twice lay after the last commit before the re-read."""
    seen = Consumption.of(members)
    assert not feeder.missing(seen), f"skipped records: {feeder.missing(seen)}"
    assert seen.rereads_below_commit(members) == []


# --- exactly once without failures ------------------------------------------------------------------------------
def test_three_client_libraries_split_a_topic_and_read_every_record_once(broker, tmp_path, workers):
    three_clients_read_every_record_once(broker.bootstrap, tmp_path, workers)


# --- leaving and crashing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leaver", ["confluent", "kafka-python", "aiokafka"])
def test_member_that_leaves_hands_its_partitions_over_without_loss_or_duplicates(broker, tmp_path, workers, leaver):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    stayer = start(workers, PARTNER[leaver], broker.bootstrap, group, topic, tmp_path)
    goer = start(workers, leaver, broker.bootstrap, group, topic, tmp_path)
    with Feeder(broker.bootstrap, topic, PARTITIONS) as feeder:
        wait_until(lambda: split_evenly([stayer, goer], topic), 60, "two members sharing", describe_all(workers))
        wait_until(lambda: len(goer.records()) > 20, 30, "the leaving member consuming", describe_all(workers))
        assert goer.close() == 0, goer.describe()
        took = wait_until(lambda: len(stayer.owned()) == PARTITIONS, REBALANCE_BOUND_S, "the stayer owning all",
                          describe_all(workers))
        time.sleep(1)
    wait_until(lambda: not feeder.missing(Consumption.of([stayer, goer])), 30, "every record consumed",
               describe_all(workers))
    seen = Consumption.of([stayer, goer])
    assert seen.duplicates() == {}, "a graceful leave commits before it goes"
    assert took < REBALANCE_BOUND_S
    print(f"\n{leaver} left: its partitions moved in {took:.1f}s")


@pytest.mark.parametrize("victim", ["confluent", "kafka-python", "aiokafka"])
def test_crashed_member_is_replaced_within_the_session_timeout(broker, tmp_path, workers, victim):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    survivor = start(workers, PARTNER[victim], broker.bootstrap, group, topic, tmp_path, session_timeout_ms=SESSION_MS)
    # It commits once a second, so the crash leaves work the survivor must redo (and only that).
    crasher = start(workers, victim, broker.bootstrap, group, topic, tmp_path, session_timeout_ms=SESSION_MS,
                    commit_interval_ms=1000)
    with Feeder(broker.bootstrap, topic, PARTITIONS) as feeder:
        wait_until(lambda: split_evenly([survivor, crasher], topic), 60, "two members sharing", describe_all(workers))
        wait_until(lambda: len(crasher.records()) > 50, 30, "the doomed member consuming", describe_all(workers))
        crasher.kill()  # SIGKILL: no commit, no LeaveGroup
        took = wait_until(lambda: len(survivor.owned()) == PARTITIONS, REBALANCE_BOUND_S,
                          "the survivor owning all partitions", describe_all(workers))
        time.sleep(1)
    wait_until(lambda: not feeder.missing(Consumption.of([survivor, crasher])), 30, "every record consumed",
               describe_all(workers))
    assert_no_skips_and_only_uncommitted_rereads([survivor, crasher], feeder)
    assert took < REBALANCE_BOUND_S
    reread = sum(len(d) for d in Consumption.of([survivor, crasher]).duplicates().values())
    print(f"\n{victim} killed: partitions moved in {took:.1f}s (session {SESSION_MS} ms), {reread} records re-read")


# --- broker and group restarts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_group_resumes_at_committed_offsets_after_the_group_and_broker_restart(brokers, tmp_path, workers, how):
    first = brokers.start()
    topic = create_topic(first.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    produce(first.bootstrap, topic, PARTITIONS, 40)
    before = [start(workers, c, first.bootstrap, group, topic, tmp_path) for c in ("confluent", "aiokafka")]
    wait_until(lambda: Consumption.of(before).covers(topic, PARTITIONS, 40), 60, "first pass consumed",
               describe_all(before))
    for w in before:
        assert w.close() == 0, w.describe()
    assert committed(first.bootstrap, group, topic) == {p: 40 for p in range(PARTITIONS)}

    if how == "sigterm":
        assert first.stop() == 0
    else:
        first.kill()
    second = brokers.restart(first)
    produce(second.bootstrap, topic, PARTITIONS, 40, start=40)
    after = [start(workers, c, second.bootstrap, group, topic, tmp_path) for c in ("kafka-python", "confluent")]
    wait_until(lambda: all(set(range(40, 80)) <= set(Consumption.of(after).offsets((topic, p)))
                           for p in range(PARTITIONS)), 60, "second pass consumed", describe_all(after))
    for w in after:
        assert w.close() == 0, w.describe()
    seen = Consumption.of(after)
    assert {tp: min(seen.offsets(tp)) for tp in seen.reads} == {(topic, p): 40 for p in range(PARTITIONS)}
    assert seen.duplicates() == {}
    assert committed(second.bootstrap, group, topic) == {p: 80 for p in range(PARTITIONS)}


def test_members_ride_out_a_broker_crash(brokers, tmp_path, workers):
    first = brokers.start()
    topic = create_topic(first.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    members = [start(workers, c, first.bootstrap, group, topic, tmp_path) for c in ("confluent", "kafka-python")]
    with Feeder(first.bootstrap, topic, PARTITIONS) as feeder:
        wait_until(lambda: split_evenly(members, topic), 60, "two members sharing", describe_all(members))
        wait_until(lambda: Consumption.of(members).total() > 200, 30, "consumption under way", describe_all(members))
        first.kill()
        second = brokers.restart(first)
        mark = feeder.count()
        wait_until(lambda: feeder.count() > mark + 300, 60, "producing again", describe_all(members))
    wait_until(lambda: not feeder.missing(Consumption.of(members)), 90, "every record consumed",
               describe_all(members))
    for w in members:
        assert w.close() == 0, w.describe()
    assert_no_skips_and_only_uncommitted_rereads(members, feeder)
    assert second.proc.poll() is None


# --- timeouts -------------------------------------------------------------------------------------------------------
def test_member_that_stops_heartbeating_is_dropped_after_its_session_timeout(broker, tmp_path, workers):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    survivor = start(workers, "kafka-python", broker.bootstrap, group, topic, tmp_path)
    frozen = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path)
    with Feeder(broker.bootstrap, topic, PARTITIONS) as feeder:
        wait_until(lambda: split_evenly([survivor, frozen], topic), 60, "two members sharing", describe_all(workers))
        frozen.freeze()  # SIGSTOP: the process, heartbeat thread included, goes silent
        took = wait_until(lambda: len(survivor.owned()) == PARTITIONS, REBALANCE_BOUND_S,
                          "the survivor owning all partitions", describe_all(workers))
        frozen.kill()
        time.sleep(1)
    wait_until(lambda: not feeder.missing(Consumption.of([survivor, frozen])), 30, "every record consumed",
               describe_all(workers))
    assert_no_skips_and_only_uncommitted_rereads([survivor, frozen], feeder)
    assert took < REBALANCE_BOUND_S
    print(f"\nfrozen member dropped: partitions moved in {took:.1f}s (session {SESSION_MS} ms)")


def test_member_that_stops_polling_leaves_after_max_poll_interval(broker, tmp_path, workers):
    max_poll_ms = SESSION_MS + 1000  # librdkafka wants max.poll.interval.ms >= session.timeout.ms
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    survivor = start(workers, "aiokafka", broker.bootstrap, group, topic, tmp_path)
    stuck = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, max_poll_interval_ms=max_poll_ms)
    with Feeder(broker.bootstrap, topic, PARTITIONS) as feeder:
        wait_until(lambda: split_evenly([survivor, stuck], topic), 60, "two members sharing", describe_all(workers))
        stuck.stall()  # keeps heartbeating from librdkafka's thread, but never polls
        took = wait_until(lambda: len(survivor.owned()) == PARTITIONS, max_poll_ms / 1000 + REBALANCE_BOUND_S,
                          "the survivor owning all partitions", describe_all(workers))
        time.sleep(1)
    wait_until(lambda: not feeder.missing(Consumption.of([survivor, stuck])), 30, "every record consumed",
               describe_all(workers))
    assert_no_skips_and_only_uncommitted_rereads([survivor, stuck], feeder)
    assert took < max_poll_ms / 1000 + REBALANCE_BOUND_S
    print(f"\nmember that stopped polling left: partitions moved in {took:.1f}s (max.poll.interval {max_poll_ms} ms)")


# --- static membership ----------------------------------------------------------------------------------------------
def test_static_member_restart_keeps_its_assignment_and_a_duplicate_instance_is_fenced(broker, tmp_path, workers):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    produce(broker.bootstrap, topic, PARTITIONS, 20)
    other = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, instance_id="a", assignor="range")
    wait_until(lambda: len(other.owned()) == PARTITIONS, 60, "the first member owning all", describe_all(workers))
    static = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, instance_id="b", assignor="range")
    wait_until(lambda: split_evenly([other, static], topic), 60, "two members sharing", describe_all(workers))
    assignment = static.owned()
    settled = len(other.events())

    # A static member that restarts within its session timeout takes its old place:
    # no rebalance, so the other member sees neither a revoke nor a new assignment.
    assert static.close() == 0, static.describe()
    again = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, instance_id="b", assignor="range")
    wait_until(lambda: again.owned() == assignment, REBALANCE_BOUND_S, "the restarted member's old assignment",
               describe_all(workers))
    produce(broker.bootstrap, topic, PARTITIONS, 20, start=20)
    wait_until(lambda: Consumption.of([other, static, again]).covers(topic, PARTITIONS, 40), 30,
               "every record consumed", describe_all(workers))
    assert [e for e in other.events()[settled:] if e["e"] in ("revoke", "assign", "lost")] == []

    # A second process with the same group.instance.id takes over; the first is fenced.
    usurper = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, instance_id="b", assignor="range")
    wait_until(lambda: any(e["e"] == "error" and e["fatal"] and FENCED_INSTANCE_TEXT in e["text"]
                           for e in again.events()), REBALANCE_BOUND_S, "the old instance fenced",
               describe_all(workers))
    wait_until(lambda: not again.alive, 30, "the fenced member to shut down", describe_all(workers))
    wait_until(lambda: usurper.owned() == assignment, REBALANCE_BOUND_S, "the new instance owning the partitions",
               describe_all(workers))
    seen = Consumption.of([other, static, again, usurper])
    assert seen.duplicates() == {}


# --- incremental (cooperative) rebalancing -------------------------------------------------------------------------
def test_cooperative_rebalance_keeps_unmoved_partitions_flowing(broker, tmp_path, workers):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    group = f"g-{topic}"
    first = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, assignor="cooperative-sticky")
    with Feeder(broker.bootstrap, topic, PARTITIONS, per_second=600) as feeder:
        wait_until(lambda: len(first.owned()) == PARTITIONS, 60, "the first member owning all",
                   describe_all(workers))
        wait_until(lambda: len(first.records()) > 100, 30, "consumption under way", describe_all(workers))
        joined_at = time.time()
        second = start(workers, "confluent", broker.bootstrap, group, topic, tmp_path, assignor="cooperative-sticky")
        wait_until(lambda: split_evenly([first, second], topic), REBALANCE_BOUND_S, "two members sharing",
                   describe_all(workers))
        settled_at = next(e["ts"] for e in second.events() if e["e"] == "assign" and e["tps"])
        time.sleep(1)
    wait_until(lambda: not feeder.missing(Consumption.of([first, second])), 30, "every record consumed",
               describe_all(workers))

    kept = first.owned()
    moved = second.owned()
    revoked = [tuple(tp) for e in first.events() if e["e"] in ("revoke", "lost") for tp in e["tps"]]
    assert sorted(revoked) == sorted(moved), "only the partitions that moved are revoked, once"
    during = {(t, p) for t, p, _, ts in first.records() if joined_at <= ts <= settled_at}
    assert kept <= during, f"kept partitions idle during the rebalance: {kept - during}"
    seen = Consumption.of([first, second])
    assert seen.duplicates() == {}
