"""A stateless cluster losing brokers: crashes, pauses past the lease, and coordinator loss.

Three `tidelog serve` processes share one bucket and table (moto, through the
fault proxy) and nothing else.  Each scenario runs real clients through the
failure and then checks the store itself, so a test can only pass when what
clients were told matches what is durably there.  The only time bounds are
generous upper bounds on failover (3 x lease + 10 s).
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.cluster import Load, fault_proxy, make_cluster, read_all, verify, wait_until  # noqa: F401
from tests.support.groups import Consumption, Worker, last_commits, stop_all

TTL_MS = 3000
FAILOVER_BOUND_S = 3 * TTL_MS / 1000 + 10
PARTITIONS = 6

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(240)]


def topic_name() -> str:
    return f"fo-{uuid.uuid4().hex[:8]}"


def test_sigkill_of_a_busy_leader_loses_and_duplicates_nothing(make_cluster) -> None:
    cluster = make_cluster(ttl_ms=TTL_MS)
    cluster.start(0, 1, 2)
    topic = topic_name()
    cluster.create_topic(topic, PARTITIONS)
    before = cluster.wait_for_leaders(topic, PARTITIONS, 60, spread=True)

    load = Load(cluster.bootstrap, topic, PARTITIONS, count=20_000, rate=2000).start()
    load.wait_acked(4000, 60)
    victim = before[0]
    moved = sorted(p for p, node in before.items() if node == victim)
    killed_at, killed_wall = time.monotonic(), time.time()
    cluster.kill(victim)
    after = cluster.wait_for_leaders(topic, PARTITIONS, FAILOVER_BOUND_S, avoid=[victim])
    failover_s = time.monotonic() - killed_at
    takeover_s = cluster.takeover_seconds(topic, moved, killed_wall)

    load.join()
    assert not load.failed, f"{len(load.failed)} records failed: {list(load.failed.items())[:3]}"
    counts = verify(load, read_all(cluster.bootstrap, topic, PARTITIONS))
    assert counts["acked"] == 20_000
    # The partitions that moved took writes from their new leader after the crash.
    late = [seq for seq, (p, _) in load.acked.items() if p in moved and seq >= load.count - 2000]
    assert late, "no records reached the moved partitions after the crash"
    print(f"\nSIGKILL failover: partitions {moved} led again {takeover_s:.1f}s after the kill (broker logs), "
          f"every broker's Metadata agreed after {failover_s:.1f}s ({victim} -> {[after[p] for p in moved]}); {counts}")


def test_broker_paused_past_its_lease_is_fenced_and_commits_nothing(make_cluster, fault_proxy) -> None:
    """SIGSTOP a leader for twice its lease while one of its commits is still on the way to the
    store (the proxy holds it for 10 s, like a congested network): the commit arrives after the
    fence and must fail, the other brokers take over, and the stale broker, once resumed, commits
    nothing, notices, and rejoins; its producer ends up acknowledged by the new leader."""
    cluster = make_cluster(ttl_ms=TTL_MS)
    victim = 0
    cluster.start(0, 1, 2)
    topic = topic_name()
    cluster.create_topic(topic, PARTITIONS)
    before = cluster.wait_for_leaders(topic, PARTITIONS, 60, spread=True)
    moved = sorted(p for p, node in before.items() if node == victim)
    name = f"{victim}-{cluster.session_of(victim)['epoch']}"

    load = Load(cluster.bootstrap, topic, PARTITIONS, count=12_000, rate=1500,
                config={"request.timeout.ms": 30_000}).start()
    load.wait_acked(3000, 60)
    wait_until(lambda: cluster.commit_log(name), 30, f"commits by session {name}")
    fault_proxy.set_rules([{"name": "late-commit", "action": "latency", "latency_ms": 10_000, "service": "dynamodb",
                            "operation": "TransactWriteItems", "body_contains": f"log#{name}", "max_count": 1}])
    wait_until(lambda: fault_proxy.fired("late-commit"), 30, "a commit of the victim to be under way")
    cluster.pause(victim)
    paused_at, paused_wall = time.monotonic(), time.time()
    others = [n for n in cluster.brokers if n != victim]

    def taken_over() -> bool:
        fenced = cluster.session_of(victim).get("fenced")
        return fenced and all(cluster.leaders(topic, via=n)[p] not in (victim, -1) for n in others for p in moved)
    wait_until(taken_over, FAILOVER_BOUND_S, "the paused broker to be fenced and its partitions taken over")
    takeover_s = cluster.takeover_seconds(topic, moved, paused_wall)
    at_fence = cluster.commit_log(name)
    time.sleep(max(0.0, 2 * TTL_MS / 1000 - (time.monotonic() - paused_at)))
    cluster.resume(victim)

    # The held commit reaches the store after the fence and fails its session check; the
    # stale broker notices and rejoins with a new session.
    proc = cluster.brokers[victim]
    wait_until(lambda: [e for e in cluster.log_events(proc, "flush failed") if e.get("fenced")], 30,
               "the stale broker's held commit to fail on the fence")
    wait_until(lambda: cluster.log_events(proc, "broker session re-registered"), 30, "the stale broker to rejoin")
    load.join()
    assert not load.failed, f"{len(load.failed)} records failed: {list(load.failed.items())[:3]}"
    counts = verify(load, read_all(cluster.bootstrap, topic, PARTITIONS))
    late = [seq for seq, (p, _) in load.acked.items() if p in moved and seq >= load.count - 1500]
    assert late, "the paused broker's producer was never redirected to the new leader"

    after = cluster.commit_log(name)
    assert after == at_fence, "the fenced session committed after it was fenced"
    orphaned = set(cluster.ingest_objects(name)) - {attrs.get("object") for _, attrs in after}
    assert orphaned, "the held commit's object was committed after all"
    print(f"\nSIGSTOP takeover: {takeover_s:.1f}s; fenced session {name} had {len(at_fence)} commits and made none "
          f"after the fence (the held commit failed; {len(orphaned)} orphaned object(s)); {counts}")


def _coordinator(bootstrap: str, group: str) -> tuple[int, str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    return desc.coordinator.id, str(desc.state)


def test_group_coordinator_loss_keeps_committed_offsets_and_the_group_reforms(make_cluster, tmp_path) -> None:
    from tests.support.groups import Feeder, wait_until as wait_for

    cluster = make_cluster(ttl_ms=TTL_MS)
    cluster.start(0, 1, 2)
    topic = topic_name()
    cluster.create_topic(topic, PARTITIONS)
    cluster.wait_for_leaders(topic, PARTITIONS, 60, spread=True)
    group = f"g-{topic}"
    members = [Worker(client, cluster.bootstrap, group, topic, tmp_path).start()
               for client in ("confluent", "kafka-python")]
    describe = lambda: "\n".join(w.describe() for w in members)  # noqa: E731
    try:
        with Feeder(cluster.bootstrap, topic, PARTITIONS) as feeder:
            wait_for(lambda: sum(len(w.owned()) for w in members) == PARTITIONS and all(w.owned() for w in members),
                     60, "two members sharing the topic", describe)
            wait_for(lambda: all(last_commits(w.events()) for w in members), 30, "commits from both members",
                     describe)
            victim, _ = _coordinator(cluster.bootstrap, group)
            assert victim in cluster.brokers
            committed_before = {tp: o for w in members for tp, o in last_commits(w.events()).items()}
            killed_at = time.monotonic()
            cluster.kill(victim)

            def reformed() -> bool:
                try:
                    node, state = _coordinator(cluster.bootstrap, group)
                except Exception:  # noqa: BLE001 - no coordinator yet
                    return False
                return node != victim and "STABLE" in state.upper()
            wait_for(reformed, FAILOVER_BOUND_S + 20, "the group to re-form on another coordinator", describe)
            reform_s = time.monotonic() - killed_at
            mark = feeder.count()
            wait_for(lambda: feeder.count() > mark + 300, 60, "producing again", describe)
        wait_for(lambda: not feeder.missing(Consumption.of(members)), 90, "every record consumed", describe)
        for w in members:
            assert w.close() == 0, w.describe()
    finally:
        stop_all(members)
        for w in members:
            w.kill()

    seen = Consumption.of(members)
    assert not feeder.missing(seen)
    # Consumers continued from the committed offsets: nothing below a commit was read again...
    assert seen.rereads_below_commit(members) == []
    # ...and the commits made before the crash survived it.
    after = {tp: o for w in members for tp, o in last_commits(w.events()).items()}
    assert all(after[tp] >= o for tp, o in committed_before.items())
    print(f"\ncoordinator failover: group re-formed {reform_s:.1f}s after its coordinator (node {victim}) died")
