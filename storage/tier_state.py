"""Reads and small writes of one partition's stored state, shared by the
maintenance services (tiering, retention, compaction, sweeping).

Every function here is a thin composition of metadata-store calls; the
decisions live in the services and in the pure modules they use.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from . import keys
from .conditions import ABSENT, Delete, Put, where
from .errors import Conflict
from .index_objects import decode_index
from .leases import lease_is_free
from .model import Item, SegmentRef
from .partition_log import lease_view_of
from .ports import MetaStore, ObjectStore
from .sessions import view_of
from .tier_items import TierHead, TierSegment, checkpoint_end

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PartitionView:
    """What the maintenance services need to know about a partition before acting on it."""

    topic_id: str
    partition: int
    lease: Item | None
    floor: int
    head: TierHead
    newest: Item | None  # the newest checkpoint: never deleted, crash recovery starts from it

    @property
    def lease_log_start(self) -> int:
        return int(self.lease.attrs.get("log_start_offset", 0)) if self.lease is not None else 0

    @property
    def log_start(self) -> int:
        """The effective log start: the leader's and retention's floor, whichever is higher."""
        return max(self.lease_log_start, self.floor)

    @property
    def checkpointed_end(self) -> int:
        """Offsets below this are checkpointed; the rest lives only with the leader."""
        return checkpoint_end(self.newest) if self.newest is not None else 0

    @property
    def newest_sk(self) -> str | None:
        return self.newest.sk if self.newest is not None else None


async def load_partition(meta: MetaStore, topic_id: str, partition: int) -> PartitionView:
    pk = keys.partition_pk(topic_id, partition)
    lease, floor_item, head_item, newest = await asyncio.gather(
        meta.get(keys.LEASES_PK, keys.lease_sk(topic_id, partition)),
        meta.get(pk, keys.LOG_START_SK),
        meta.get(pk, keys.TIER_HEAD_SK),
        meta.query(pk, prefix=keys.CHECKPOINT_PREFIX, reverse=True, limit=1),
    )
    floor = int(floor_item.attrs["offset"]) if floor_item is not None else 0
    return PartitionView(topic_id, partition, lease, floor, TierHead.from_item(topic_id, partition, head_item),
                         newest[0] if newest else None)


async def tier_segments(meta: MetaStore, topic_id: str, partition: int, *, covering_from: int | None = None,
                        limit: int | None = None) -> list[TierSegment]:
    """Tier segments oldest first; with ``covering_from``, only those ending after it."""
    after = keys.tier_sk(covering_from) if covering_from is not None else None
    items = await meta.query(keys.partition_pk(topic_id, partition), prefix=keys.TIER_PREFIX, after=after,
                             limit=limit)
    return [TierSegment.from_item(i) for i in items]


async def checkpoints(meta: MetaStore, topic_id: str, partition: int, *, ending_after: int | None = None,
                      ending_at_most: int | None = None, limit: int | None = None) -> list[Item]:
    """Checkpoint items oldest first (by end offset), filtered by their end offset."""
    return await meta.query(
        keys.partition_pk(topic_id, partition), prefix=keys.CHECKPOINT_PREFIX,
        after=keys.checkpoints_ending_after(ending_after) if ending_after is not None else None,
        before=keys.checkpoints_ending_after(ending_at_most) if ending_at_most is not None else None,
        limit=limit)


async def log_start_floor(meta: MetaStore, topic_id: str, partition: int) -> int:
    """Retention's log-start floor for a partition (0 when it never moved)."""
    item = await meta.get(keys.partition_pk(topic_id, partition), keys.LOG_START_SK)
    return int(item.attrs["offset"]) if item is not None else 0


async def raise_floor(meta: MetaStore, topic_id: str, partition: int, offset: int) -> int:
    """Raise the log-start floor to at least ``offset``; it never moves back.  Returns the floor."""
    pk = keys.partition_pk(topic_id, partition)
    while True:
        current = await meta.get(pk, keys.LOG_START_SK)
        value = int(current.attrs["offset"]) if current is not None else None
        if value is not None and value >= offset:
            return value
        condition = ABSENT if current is None else where(offset=value)
        try:
            await meta.write([Put(Item(pk, keys.LOG_START_SK, {"offset": offset}), condition)])
            return offset
        except Conflict:
            continue  # someone else moved it; re-read and compare again


async def lease_is_live(meta: MetaStore, lease: Item | None) -> bool:
    """True while the partition's lease belongs to a session that has not ended."""
    view = lease_view_of(lease)
    if view.owner_node is None:
        return False
    owner = await meta.get(keys.BROKERS_PK, keys.broker_sk(int(view.owner_node)))
    return not lease_is_free(view, None if owner is None else view_of(owner))


async def delete_items(meta: MetaStore, targets: Iterable[tuple[str, str]], *, concurrency: int = 16) -> int:
    """Unconditional single-item deletes, side by side (1 write unit each, no transaction)."""
    targets = list(targets)
    await bounded_map(lambda t: meta.write([Delete(t[0], t[1])]), targets, concurrency)
    return len(targets)


async def bounded_map(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``fn`` over ``items`` with at most ``limit`` in flight; results in input order, first error raised."""
    gate = asyncio.Semaphore(max(1, limit))

    async def run(item: T) -> R:
        async with gate:
            return await fn(item)
    return list(await asyncio.gather(*(run(i) for i in items)))


class IndexCache:
    """Decoded checkpoint index objects.  They are immutable, so entries never go stale."""

    def __init__(self, objects: ObjectStore, max_entries: int = 256) -> None:
        self.objects = objects
        self.max_entries = max_entries
        self._data: OrderedDict[str, dict[tuple[str, int], list[SegmentRef]]] = OrderedDict()

    async def refs(self, key: str, topic_id: str, partition: int) -> list[SegmentRef]:
        index = self._data.get(key)
        if index is None:
            index = decode_index(await self.objects.get(key))
            self._data[key] = index
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        else:
            self._data.move_to_end(key)
        return index.get((topic_id, partition), [])
