"""Lease rules (pure): expiry on the observer's own clock, fair placement, gradual moves."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from tidelog.broker.cluster import coordinator_node
from tidelog.storage.leases import ExpiryWatch, LeaseTiming, LeaseView, SessionView, fair_share, lease_is_free, moves_toward

TIMING = LeaseTiming(ttl_ms=3000, margin_ms=1000)


def view(heartbeat: int, epoch: int = 1, fenced: bool = False, alive: bool = True) -> SessionView:
    return SessionView(node_id=5, epoch=epoch, heartbeat=heartbeat, fenced=fenced, alive=alive)


def test_a_session_expires_only_after_its_heartbeat_stood_still_for_ttl_plus_margin() -> None:
    watch = ExpiryWatch(TIMING)
    watch.observe(view(7), 10_000)
    assert not watch.expired(view(7), 10_000 + 3999)
    assert watch.expired(view(7), 10_000 + 4000)
    watch.observe(view(8), 14_500)  # it renewed: the clock starts again
    assert not watch.expired(view(8), 14_500 + 3999)
    watch.observe(view(0, epoch=2), 20_000)  # a restart (new epoch) also restarts the clock
    assert not watch.expired(view(0, epoch=2), 23_000)


def test_an_unobserved_or_changed_heartbeat_is_never_expired() -> None:
    watch = ExpiryWatch(TIMING)
    assert not watch.expired(view(1), 10**9)
    watch.observe(view(1), 0)
    assert not watch.expired(view(2), 10**9)
    assert watch.expired(view(2, fenced=True), 0) and watch.expired(view(2, alive=False), 0)


@given(renew_started=st.integers(0, 10**9), write_delay=st.integers(0, 10_000), see_delay=st.integers(0, 10_000))
def test_the_owner_stops_trusting_its_session_before_any_observer_may_fence_it(renew_started, write_delay,
                                                                                see_delay) -> None:
    """The renewal lands at or after it was sent, and is seen at or after it landed, so with equal
    clock rates the observer's earliest expiry is strictly after the owner's trust window."""
    written = renew_started + write_delay
    watch = ExpiryWatch(TIMING)
    watch.observe(view(3), written + see_delay)
    earliest_expiry = written + see_delay + TIMING.ttl_ms + TIMING.margin_ms
    assert watch.expired(view(3), earliest_expiry)
    assert TIMING.owner_valid_until(renew_started) < earliest_expiry


def test_lease_is_free_only_when_unowned_or_its_session_is_over() -> None:
    lease = LeaseView(owner_node=5, owner_epoch=1, leader_epoch=3, version=9)
    assert lease_is_free(LeaseView(None, None, 0, 0), None)
    assert not lease_is_free(lease, view(4))  # silent is not over: it must be fenced first
    assert lease_is_free(lease, view(4, fenced=True))
    assert lease_is_free(lease, view(4, alive=False))
    assert lease_is_free(lease, view(0, epoch=2))


@settings(max_examples=50)
@given(partitions=st.integers(0, 60), nodes=st.sets(st.integers(0, 20), min_size=1, max_size=6), seed=st.randoms())
def test_fair_share_is_even_and_the_same_whatever_the_input_order(partitions, nodes, seed) -> None:
    tps = [("t", p) for p in range(partitions)]
    target = fair_share(tps, nodes)
    shuffled = list(tps)
    seed.shuffle(shuffled)
    assert fair_share(shuffled, list(reversed(sorted(nodes)))) == target
    assert set(target) == set(tps) and set(target.values()) <= nodes
    load = [list(target.values()).count(n) for n in nodes]
    assert max(load) - min(load) <= 1 if partitions >= len(nodes) else max(load) <= 1


def test_moves_toward_hands_over_at_most_the_limit_each_way() -> None:
    target = {("t", p): 1 for p in range(10)}
    current = {("t", p): (0 if p < 5 else None) for p in range(10)}
    release, acquire = moves_toward(target, current, 0, limit=3)
    assert (release, acquire) == ([("t", 0), ("t", 1), ("t", 2)], [])
    release, acquire = moves_toward(target, current, 1, limit=3)
    assert release == [] and len(acquire) == 3


def test_coordinators_move_only_when_their_own_broker_leaves() -> None:
    groups = [f"g{i}" for i in range(200)]
    before = {g: coordinator_node(g, [0, 1, 2]) for g in groups}
    after = {g: coordinator_node(g, [0, 2]) for g in groups}
    assert {g for g in groups if before[g] != after[g]} == {g for g in groups if before[g] == 1}
    assert coordinator_node("g", []) is None
