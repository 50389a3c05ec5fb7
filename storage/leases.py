"""Lease rules: when a broker may act for a partition, and when another may take over.

Nothing here compares two machines' clocks.  A broker's partition leases are
tied to its *session* item, which it renews by bumping a heartbeat counter.

* The owner trusts its session until ``renew_started + ttl - margin`` on its
  own monotonic clock (the renewal may have landed as late as the reply, but
  never earlier than the request left).
* Another broker declares the session expired only after it has watched the
  same ``(epoch, heartbeat)`` for ``ttl + margin`` on *its* monotonic clock.
  Since the observer first saw the value after it was written, the owner's
  trust window has closed by then even with modest clock-rate drift.
* Expiry alone gives nobody the right to commit: the taker must first mark
  the session fenced with a write conditioned on that exact heartbeat, and
  every commit checks the session is unfenced.  Safety therefore rests on
  the conditional writes; the clocks only decide *when* to attempt them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    ttl_ms: int = 10_000
    margin_ms: int = 1_000

    @property
    def renew_every_ms(self) -> int:
        return max(100, self.ttl_ms // 4)

    def owner_valid_until(self, renew_started_ms: int) -> int:
        return renew_started_ms + self.ttl_ms - self.margin_ms


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the store says about a broker session."""

    node_id: int
    epoch: int
    heartbeat: int
    fenced: bool
    alive: bool


@dataclass(slots=True)
class _Sighting:
    epoch: int
    heartbeat: int
    first_seen_ms: int


class ExpiryWatch:
    """Tracks other sessions' heartbeats to decide, on our own clock, which have expired."""

    def __init__(self, timing: LeaseTiming) -> None:
        self._timing = timing
        self._seen: dict[int, _Sighting] = {}

    def observe(self, view: SessionView, now_ms: int) -> None:
        seen = self._seen.get(view.node_id)
        if seen is None or (seen.epoch, seen.heartbeat) != (view.epoch, view.heartbeat):
            self._seen[view.node_id] = _Sighting(view.epoch, view.heartbeat, now_ms)

    def expired(self, view: SessionView, now_ms: int) -> bool:
        if view.fenced or not view.alive:
            return True
        seen = self._seen.get(view.node_id)
        if seen is None or (seen.epoch, seen.heartbeat) != (view.epoch, view.heartbeat):
            return False
        return now_ms - seen.first_seen_ms >= self._timing.ttl_ms + self._timing.margin_ms


@dataclass(frozen=True, slots=True)
class LeaseView:
    """A partition's ownership as stored: the owner's node id and session epoch."""

    owner_node: int | None
    owner_epoch: int | None
    leader_epoch: int
    version: int


def lease_is_free(lease: LeaseView, owner_session: SessionView | None) -> bool:
    """A lease can be taken when unowned, or when its owner's session is over.

    A session is over when the node re-registered (new epoch), shut down, or
    was fenced.  A merely *silent* session is not over until it is fenced.
    """
    if lease.owner_node is None:
        return True
    if owner_session is None:
        return True
    if owner_session.epoch != lease.owner_epoch:
        return True
    return owner_session.fenced or not owner_session.alive


def fair_share(partitions: Sequence[tuple[str, int]], nodes: Iterable[int]) -> dict[tuple[str, int], int]:
    """Deterministic, even spread of partitions over live nodes (rendezvous hashing
    with a cap), so every broker computes the same target without talking."""
    import hashlib

    live = sorted(set(nodes))
    if not live:
        return {}
    # Every node gets ``floor`` partitions and exactly ``extra`` of them one more,
    # so loads differ by at most one (a plain cap of ceil(P/N) could leave a node
    # idle: 4 partitions on 3 nodes as 2/2/0).
    unique = sorted(set(partitions))
    floor, extra = divmod(len(unique), len(live))
    load: dict[int, int] = {n: 0 for n in live}
    topped = 0
    target: dict[tuple[str, int], int] = {}
    for tp in unique:
        ranked = sorted(
            live,
            key=lambda n: hashlib.blake2b(f"{tp[0]}\0{tp[1]}\0{n}".encode(), digest_size=8).digest(),
        )
        for node in ranked:
            if load[node] < floor or (load[node] == floor and topped < extra):
                if load[node] == floor:
                    topped += 1
                target[tp] = node
                load[node] += 1
                break
    return target


def moves_toward(target: Mapping[tuple[str, int], int], current: Mapping[tuple[str, int], int | None], node: int, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """What ``node`` should release and acquire next, at most ``limit`` of each,
    so a joining broker takes partitions gradually rather than all at once."""
    release = [tp for tp, owner in sorted(current.items()) if owner == node and target.get(tp) != node]
    acquire = [tp for tp, want in sorted(target.items()) if want == node and current.get(tp) != node]
    return release[:limit], acquire[:limit]
