"""Cluster membership and partition placement, from the shared store alone.

Every broker runs the same loop: read the broker registry and the lease
table, fence sessions that have stopped heartbeating (on our own clock, see
`tidelog.storage.leases`), compute the same deterministic fair share of
partitions over the live brokers, then hand over a few partitions per tick:
release what should move away (flush, commit, checkpoint, release) and take
what is free and ours.  No broker talks to another.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable

from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import Clock
from tidelog.storage.leases import ExpiryWatch, LeaseTiming, fair_share, moves_toward
from tidelog.storage.partition_log import list_leases
from tidelog.storage.model import Item
from tidelog.storage.ports import MetaStore
from tidelog.storage.sessions import BrokerInfo, fence, info_of, list_sessions, view_of

from .logs import LogManager

log = logging.getLogger("tidelog.cluster")


@dataclass
class ClusterView:
    """What this broker currently believes: live brokers and each partition's leader."""

    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    leaders: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (topic, p) -> (node, epoch)


def coordinator_node(group_id: str, nodes: list[int]) -> int | None:
    """Rendezvous hashing: every broker picks the same coordinator, and only
    groups of a departed broker move when membership changes."""
    if not nodes:
        return None
    return max(nodes, key=lambda n: hashlib.blake2b(f"{group_id}\0{n}".encode(), digest_size=8).digest())


class ClusterManager:
    def __init__(self, meta: MetaStore, catalog: Catalog, logs: LogManager, clock: Clock, timing: LeaseTiming,
                 me: Callable[[], BrokerInfo], *, moves_per_tick: int = 16) -> None:
        self.meta = meta
        self.catalog = catalog
        self.logs = logs
        self.clock = clock
        self.timing = timing
        self._me = me
        self.moves_per_tick = moves_per_tick
        self.watch = ExpiryWatch(timing)
        self.view = ClusterView({me().node_id: me()})
        self.on_coordinators_changed: Callable[[], None] | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def tick_seconds(self) -> float:
        return max(0.1, self.timing.ttl_ms / 10_000)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cluster-loop")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable
                log.warning("cluster tick failed", extra={"error": str(exc)})
            await asyncio.sleep(self.tick_seconds)

    async def live_brokers(self, sessions: list[Item] | None = None) -> dict[int, BrokerInfo]:
        me = self._me()
        now = self.clock.monotonic_ms()
        live = {me.node_id: me}
        for item in await list_sessions(self.meta) if sessions is None else sessions:
            view = view_of(item)
            if view.node_id == me.node_id:
                continue
            self.watch.observe(view, now)
            if view.fenced or not view.alive:
                continue
            if self.watch.expired(view, now):
                if await fence(self.meta, view):
                    log.warning("fenced expired broker session", extra={"node": view.node_id, "epoch": view.epoch})
                continue
            live[view.node_id] = info_of(item)
        return live

    async def tick(self) -> None:
        me = self._me()
        session_items = await list_sessions(self.meta)
        live = await self.live_brokers(session_items)
        epochs = {view_of(i).node_id: view_of(i).epoch for i in session_items}
        epochs[me.node_id] = self.logs.writer.session.epoch
        known_topics = dict(self.logs.topics)
        topics = {t.topic_id: t for t in await self.catalog.list()}
        self.logs.sync_topics({t.name: t for t in topics.values()}, known_topics)
        current: dict[tuple[str, int], int | None] = {}
        leaders: dict[tuple[str, int], tuple[int, int]] = {}
        for row in await list_leases(self.meta):
            topic = topics.get(row.topic_id)
            if topic is None:
                continue
            owner = row.owner_node
            alive = owner is not None and owner in live and epochs.get(owner) == row.owner_epoch
            if owner == me.node_id and (topic.name, row.partition) not in self.logs.partitions:
                # Our session holds the lease but we do not lead the partition (an acquire
                # whose reply was lost): it is ours to take again, nobody else's to serve.
                alive = False
            current[(topic.name, row.partition)] = owner if alive else None
            if alive:
                leaders[(topic.name, row.partition)] = (owner, row.leader_epoch)
        for (name, p), state in list(self.logs.partitions.items()):
            leaders[(name, p)] = (me.node_id, state.lease.leader_epoch)
            current[(name, p)] = me.node_id
        all_partitions = [(t.name, p) for t in topics.values() for p in range(t.partitions)]
        target = fair_share(all_partitions, live.keys())
        changed_brokers = set(live) != set(self.view.brokers)
        self.view = ClusterView(live, leaders)
        if changed_brokers and self.on_coordinators_changed is not None:
            try:
                self.on_coordinators_changed()
            except Exception as exc:  # noqa: BLE001 - never let it stall partition placement
                log.warning("coordinator hand-over failed", extra={"error": str(exc)})
        release, acquire = moves_toward(target, current, me.node_id, self.moves_per_tick)
        for name, p in release:
            if target.get((name, p)) in live:
                await self.logs.release(name, p)
                self.view.leaders.pop((name, p), None)
        by_name = {t.name: t for t in topics.values()}
        for name, p in acquire:
            if current.get((name, p)) is None:
                state = await self.logs.lead(by_name[name], p)
                if state is not None:
                    self.view.leaders[(name, p)] = (me.node_id, state.lease.leader_epoch)

    def leader(self, topic: str, partition: int) -> tuple[int, int] | None:
        return self.view.leaders.get((topic, partition))

    def coordinator(self, group_id: str) -> BrokerInfo | None:
        node = coordinator_node(group_id, sorted(self.view.brokers))
        return None if node is None else self.view.brokers.get(node)
