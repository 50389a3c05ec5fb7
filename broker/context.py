"""Everything a request handler may use, built once per broker process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import Clock
from tidelog.storage.producer_ids import ProducerIdAllocator
from tidelog.storage.sessions import BrokerInfo

from .cluster import ClusterManager
from .logs import LogManager
from .settings import Settings


@dataclass
class BrokerContext:
    settings: Settings
    me: BrokerInfo
    catalog: Catalog
    logs: LogManager
    producer_ids: ProducerIdAllocator
    clock: Clock
    groups: Any = None  # the group coordinator
    cluster: ClusterManager | None = None
    extra: dict = field(default_factory=dict)

    def brokers(self) -> list[BrokerInfo]:
        if self.cluster is None:
            return [self.me]
        return [self.cluster.view.brokers[n] for n in sorted(self.cluster.view.brokers)]

    def coordinator_for(self, group_id: str) -> BrokerInfo | None:
        if self.cluster is None:
            return self.me
        return self.cluster.coordinator(group_id)

    def is_coordinator(self, group_id: str) -> bool:
        node = self.coordinator_for(group_id)
        return node is not None and node.node_id == self.me.node_id

    def _leader(self, topic: str, partition: int) -> tuple[int, int]:
        state = self.logs.state(topic, partition)
        if state is not None and not state.releasing and self.logs.writable():
            # (Not while our session may have lapsed: we may have been replaced.)
            return self.me.node_id, state.lease.leader_epoch
        if self.cluster is not None:
            found = self.cluster.leader(topic, partition)
            if found is not None and found[0] != self.me.node_id:
                return found
        return -1, -1

    def leader_of(self, topic: str, partition: int) -> int:
        return self._leader(topic, partition)[0]

    def leader_epoch_of(self, topic: str, partition: int) -> int:
        return self._leader(topic, partition)[1]
