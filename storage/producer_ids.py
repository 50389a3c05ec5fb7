"""Cluster-unique producer ids, handed out in blocks so InitProducerId rarely writes."""

from __future__ import annotations

import asyncio

from . import keys
from .conditions import ABSENT, Put, where
from .errors import Conflict
from .model import Item
from .ports import MetaStore

BLOCK = 1000


class ProducerIdAllocator:
    def __init__(self, meta: MetaStore, block: int = BLOCK) -> None:
        self.meta = meta
        self.block = block
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def allocate(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                self._next, self._end = await self._claim_block()
            pid = self._next
            self._next += 1
            return pid

    async def _claim_block(self) -> tuple[int, int]:
        while True:
            current = await self.meta.get(keys.COUNTERS_PK, keys.PRODUCER_ID_SK)
            start = 0 if current is None else int(current.attrs["next"])
            item = Item(keys.COUNTERS_PK, keys.PRODUCER_ID_SK, {"next": start + self.block})
            try:
                await self.meta.write([Put(item, ABSENT if current is None else where(next=start))])
            except Conflict:
                continue
            return start, start + self.block
