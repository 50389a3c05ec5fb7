"""Fencing of stale and unknown members' offset commits, over the wire.

Two members the test drives by hand over raw sockets (one dynamic, one
static) go through several generations; in between, 1,000 randomised
OffsetCommit requests that must be fenced (old or future generations, random
member ids, generation -1 while the group has members, another member's
group.instance.id, commits while a rebalance is completing) are sent with
offsets below and above the committed ones.  None may be accepted, each must
answer the error Kafka gives for its case, and OffsetFetch must show the
committed offsets only ever moving forward, through legitimate commits.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.support.groups import create_topic
from tests.support.raw_kafka import (
    RawClient,
    assignment,
    commit_errors,
    commit_request,
    fetch_request,
    fetched,
    join_request,
    sync_request,
)

ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82

PARTITIONS = 6
FENCED_REQUESTS = 1000
STATIC_INSTANCE = "static-b"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def backend() -> str:
    return "embedded"


@dataclass
class Group:
    """Two hand-driven members: ``a`` (dynamic) and ``b`` (static), each on its own connection."""

    bootstrap: str
    name: str
    topic: str
    a: RawClient = field(init=False)
    b: RawClient = field(init=False)
    a_id: str = ""
    b_id: str = ""
    generation: int = -1
    leader: str = ""

    def __post_init__(self) -> None:
        self.a = RawClient(self.bootstrap, "member-a")
        self.b = RawClient(self.bootstrap, "member-b")
        first = self.a.request(join_request(self.name, "", [self.topic]))
        assert first.error_code == MEMBER_ID_REQUIRED
        self.a_id = first.member_id

    def join(self, *, sync: bool = True) -> None:
        """Both members (re)join: a new generation.  Without ``sync`` it stays CompletingRebalance."""
        self.a.send(join_request(self.name, self.a_id, [self.topic]))
        self.b.send(join_request(self.name, self.b_id, [self.topic], instance_id=STATIC_INSTANCE))
        ja, jb = self.a.receive(), self.b.receive()
        assert ja.error_code == jb.error_code == 0, (ja, jb)
        assert ja.generation_id == jb.generation_id > self.generation
        self.generation, self.leader, self.b_id = ja.generation_id, ja.leader, jb.member_id
        if sync:
            self.sync()

    def sync(self) -> None:
        assert self.leader == self.a_id, "the first member to join leads"
        plan = {self.a_id: assignment(self.topic, [0, 1, 2]), self.b_id: assignment(self.topic, [3, 4, 5])}
        self.b.send(sync_request(self.name, self.generation, self.b_id, {}, instance_id=STATIC_INSTANCE))
        self.a.send(sync_request(self.name, self.generation, self.a_id, plan))
        sb, sa = self.b.receive(), self.a.receive()
        assert sa.error_code == sb.error_code == 0, (sa, sb)

    def commit(self, offsets: dict[tuple[str, int], int]) -> set[int]:
        return commit_errors(self.a.request(commit_request(self.name, self.generation, self.a_id, offsets)))

    def close(self) -> None:
        self.a.close()
        self.b.close()


def bad_commit(rng: random.Random, g: Group, completing: bool) -> tuple[str, dict, int]:
    """One commit that must be refused: (kind, request fields, expected error)."""
    member, instance = rng.choice([(g.a_id, None), (g.b_id, STATIC_INSTANCE)])
    if completing:
        # The group is CompletingRebalance: even the current generation must wait.
        kind = rng.choice(["completing", "old_generation", "unknown_member"])
    else:
        kind = rng.choice(["old_generation", "future_generation", "unknown_member", "anonymous_minus_one",
                           "member_minus_one", "stolen_instance", "unknown_instance"])
    if kind == "completing":
        return kind, dict(generation=g.generation, member_id=member, instance_id=instance), REBALANCE_IN_PROGRESS
    if kind == "old_generation":
        return kind, dict(generation=rng.randrange(0, g.generation), member_id=member, instance_id=instance), \
            ILLEGAL_GENERATION
    if kind == "future_generation":
        return kind, dict(generation=g.generation + rng.randint(1, 10_000), member_id=member,
                          instance_id=instance), ILLEGAL_GENERATION
    if kind == "unknown_member":
        return kind, dict(generation=rng.choice([-1, 0, g.generation, g.generation + 1, rng.randint(0, 2**31 - 1)]),
                          member_id=f"ghost-{uuid.UUID(int=rng.getrandbits(128))}", instance_id=None), \
            UNKNOWN_MEMBER_ID
    if kind == "anonymous_minus_one":
        # Kafka lets a consumer outside any group commit only while the group is empty.
        return kind, dict(generation=-1, member_id="", instance_id=None), UNKNOWN_MEMBER_ID
    if kind == "member_minus_one":
        return kind, dict(generation=-1, member_id=member, instance_id=instance), ILLEGAL_GENERATION
    if kind == "stolen_instance":
        thief = rng.choice([g.a_id, f"ghost-{uuid.UUID(int=rng.getrandbits(128))}"])
        return kind, dict(generation=rng.choice([g.generation, g.generation - 1]), member_id=thief,
                          instance_id=STATIC_INSTANCE), FENCED_INSTANCE_ID
    # An instance id nobody holds does not fence; the unknown member id does.
    return kind, dict(generation=g.generation, member_id=f"ghost-{uuid.UUID(int=rng.getrandbits(128))}",
                      instance_id=f"nobody-{rng.getrandbits(32)}"), UNKNOWN_MEMBER_ID


def test_a_thousand_fenced_commits_are_refused_and_never_move_committed_offsets(broker):
    topic = create_topic(broker.bootstrap, PARTITIONS)
    g = Group(broker.bootstrap, f"fence-{topic}", topic)
    rng = random.Random(0x71DE)
    probe = RawClient(broker.bootstrap, "attacker")
    tps = [(topic, p) for p in range(PARTITIONS)]
    try:
        for _ in range(3):
            g.join()
        committed = {tp: 1000 for tp in tps}
        assert g.commit(committed) == {0}
        outcomes: Counter[tuple[str, int]] = Counter()
        sent = 0
        while sent < FENCED_REQUESTS:
            completing = sent % 250 == 200
            if sent % 250 == 0 and sent:
                g.join()  # a new generation; the old one joins the stale set
            if completing:
                g.join(sync=False)
            for _ in range(50):
                kind, fields, expected = bad_commit(rng, g, completing)
                offsets = {tp: rng.choice([rng.randrange(0, committed[tp]), committed[tp] + rng.randint(1, 10**6)])
                           for tp in rng.sample(tps, rng.randint(1, PARTITIONS))}
                errors = commit_errors(probe.request(commit_request(g.name, fields["generation"], fields["member_id"],
                                                                    offsets, instance_id=fields["instance_id"])))
                assert errors == {expected}, f"{kind} {fields} answered {errors}, expected {expected}"
                outcomes[(kind, expected)] += 1
                sent += 1
            assert fetched(probe.request(fetch_request({g.name: tps})), g.name) == committed
            if completing:
                g.sync()
            # A legitimate commit moves the offsets forward; fenced ones never moved them.
            committed = {tp: o + rng.randint(1, 10) for tp, o in committed.items()}
            assert g.commit(committed) == {0}
        assert fetched(probe.request(fetch_request({g.name: tps})), g.name) == committed
        assert sent == FENCED_REQUESTS
        assert {kind for kind, _ in outcomes} == {"completing", "old_generation", "future_generation",
                                                  "unknown_member", "anonymous_minus_one", "member_minus_one",
                                                  "stolen_instance", "unknown_instance"}
    finally:
        probe.close()
        g.close()
