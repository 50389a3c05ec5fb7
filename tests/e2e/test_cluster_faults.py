"""A three-broker cluster under S3 and DynamoDB faults injected by the fault proxy.

Throttling (503 SlowDown) must cost latency, never records.  Lost replies
(moto applied the request, the broker never heard back) are the hard case:
every commit, lease change and session write must settle them without
duplicating or dropping a record, and whatever a failed flush left in the
bucket must be recognisable as an orphan by `tidelog.storage.gc`.  Each
test asserts that its faults actually fired.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.cluster import Load, fault_proxy, make_cluster, read_all, verify, wait_until  # noqa: F401

TTL_MS = 3000
PARTITIONS = 6
UNBOUNDED = 10**7  # records: loads here run until stopped

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.timeout(240)]


def topic_name() -> str:
    return f"ft-{uuid.uuid4().hex[:8]}"


def test_s3_throttling_loses_no_acknowledged_record(make_cluster, fault_proxy) -> None:
    cluster = make_cluster(ttl_ms=TTL_MS)
    cluster.start(0, 1, 2)
    topic = topic_name()
    cluster.create_topic(topic, PARTITIONS)
    cluster.wait_for_leaders(topic, PARTITIONS, 60, spread=True)

    fault_proxy.set_rules([{"name": "slowdown", "action": "error", "service": "s3",
                            "operation": ["PutObject", "UploadPart", "CompleteMultipartUpload"],
                            "every": 5}])  # exactly 20%
    # Load runs until the faults have fired enough: how many PUTs a number of records
    # takes depends on how the brokers batch, i.e. on the machine's speed.
    load = Load(cluster.bootstrap, topic, PARTITIONS, count=UNBOUNDED, rate=1500).start()
    wait_until(lambda: fault_proxy.fired("slowdown") >= 10 or load.error, 120, "ten throttled S3 PUTs")
    fault_proxy.clear()
    load.wait_acked(load.acked_count() + 1500, 60)
    load.stop()
    load.join()
    counts = verify(load, read_all(cluster.bootstrap, topic, PARTITIONS))
    fired = fault_proxy.fired("slowdown")
    assert not load.failed, f"{len(load.failed)} records failed: {list(load.failed.items())[:3]}"
    print(f"\n503s: {fired} S3 PUTs answered 503 SlowDown "
          f"of {fault_proxy.snapshot()['requests'].get('s3:PutObject')}; {counts}")


def test_lost_replies_cause_no_duplicates_no_holes_and_orphans_are_found(make_cluster, fault_proxy) -> None:
    """5% of commit transactions, S3 PUTs and session writes lose their reply.  Then one broker's
    commits start failing and it crashes mid-flush, so its last objects were PUT and never
    committed: exactly those (and any voided ones) must come out of `find_orphans`."""
    from tidelog.storage.gc import find_orphans, parse_ingest_key
    from tidelog.storage import keys

    cluster = make_cluster(ttl_ms=TTL_MS)
    cluster.start(0, 1, 2)
    # Lost replies from the start, so lease acquisition and hand-over see them too.
    # Every 20th matching request: exactly 5%, and certain to fire.
    lost = [{"name": "lost-commit", "action": "drop_reply", "service": "dynamodb",
             "operation": "TransactWriteItems", "every": 20},
            {"name": "lost-put", "action": "drop_reply", "service": "s3", "operation": "PutObject", "every": 20},
            {"name": "lost-session-write", "action": "drop_reply", "service": "dynamodb", "operation": "PutItem",
             "every": 20}]
    fault_proxy.set_rules(lost)
    topic = topic_name()
    cluster.create_topic(topic, PARTITIONS)
    cluster.wait_for_leaders(topic, PARTITIONS, 60, spread=True)

    load = Load(cluster.bootstrap, topic, PARTITIONS, count=UNBOUNDED, rate=1500).start()
    wait_until(lambda: all(fault_proxy.fired(r["name"]) for r in lost) or load.error, 120,
               f"every lost-reply fault to fire: {[r['name'] for r in lost]}")
    victim = 0
    session = f"{victim}-{cluster.session_of(victim)['epoch']}"
    # Let commits whose reply was dropped finish their retries first: one landing now
    # would look like a failed commit to the rule below and leave no orphan.
    others = [r for r in lost if r["operation"] != "TransactWriteItems"]
    fault_proxy.set_rules(others)
    time.sleep(3)
    fault_proxy.set_rules([*others, {"name": "victim-commits-fail", "action": "error", "service": "dynamodb",
                                     "operation": "TransactWriteItems", "body_contains": f"log#{session}"}])
    wait_until(lambda: fault_proxy.fired("victim-commits-fail"), 30, "the victim to attempt a commit")
    time.sleep(0.5)
    cluster.kill(victim)
    load.wait_acked(load.acked_count() + 1500, 60)
    load.stop()
    load.join()
    fault_proxy.clear()
    counts = verify(load, read_all(cluster.bootstrap, topic, PARTITIONS))
    assert not load.failed, f"{len(load.failed)} records failed: {list(load.failed.items())[:3]}"
    for name in ("lost-commit", "lost-put", "lost-session-write", "victim-commits-fail"):
        assert fault_proxy.fired(name) > 0, f"fault {name} never fired: {fault_proxy.snapshot()}"

    # Every session is over once the brokers stop, so every orphan is provable.
    for node in list(cluster.brokers):
        assert cluster.stop(node) == 0

    async def orphans_and_truth(storage):
        found = await find_orphans(storage.objects, storage.meta, older_than_ms=0, now_ms=int(time.time() * 1000) + 1)
        truth, referenced = set(), set()
        async for info in storage.objects.list("ingest/"):
            parsed = parse_ingest_key(info.key)
            item = await storage.meta.get(keys.commit_log_pk(parsed.session), keys.commit_log_sk(parsed.seq))
            if item is None or item.get("void"):
                truth.add(info.key)
            else:
                referenced.add(info.key)
        return found, truth, referenced
    found, truth, referenced = cluster.inspect(orphans_and_truth)
    assert truth, (f"the failed commits left no orphaned object behind: victim objects "
                   f"{cluster.ingest_objects(session)[-3:]} commit log {cluster.commit_log(session)[-3:]} "
                   f"proxy {fault_proxy.snapshot()['actions']}")
    assert set(found) == truth
    assert not set(found) & referenced
    print(f"\nlost replies: {fault_proxy.snapshot()['actions']}; {counts}; "
          f"{len(truth)} orphans of {len(truth) + len(referenced)} ingest objects, all found")
