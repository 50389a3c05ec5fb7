"""Everything a request handler may use, built once per broker process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import Clock
from tidelog.storage.producer_ids import ProducerIdAllocator
from tidelog.storage.sessions import BrokerInfo

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
    groups: Any = None  # the group coordinator, when consumer groups are enabled
    extra: dict = field(default_factory=dict)

    def brokers(self) -> list[BrokerInfo]:
        return [self.me]

    def coordinator_for(self, group_id: str) -> BrokerInfo | None:
        return self.me

    def leader_of(self, topic: str, partition: int) -> int:
        state = self.logs.state(topic, partition)
        return self.me.node_id if state is not None else -1

    def leader_epoch_of(self, topic: str, partition: int) -> int:
        state = self.logs.state(topic, partition)
        return state.lease.leader_epoch if state is not None else -1
