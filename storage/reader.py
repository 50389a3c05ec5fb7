"""The read side: find which object holds an offset and fetch only that partition's bytes.

Lookups go newest-structure-first: refs the caller already holds (the
leader's uncheckpointed tail), then checkpoint items (one Query, then the
checkpoint's index object, cached), then tier segments.  Each object range is
fetched with one ranged GET and cached, so a consumer reading sequentially
costs one GET per ingest object range, not one per fetch request.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from . import keys
from .index_objects import decode_index
from .model import SegmentRef
from .ports import MetaStore, ObjectStore
from .segments import BatchEntry, decode_partition_blocks


class _LRU:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._data: OrderedDict = OrderedDict()

    def get(self, key):
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key, value, size: int) -> None:
        if key in self._data:
            return
        self._data[key] = (value, size)
        self.used += size
        while self.used > self.budget and self._data:
            _, (_, old_size) = self._data.popitem(last=False)
            self.used -= old_size


class LogReader:
    def __init__(self, objects: ObjectStore, meta: MetaStore, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.objects = objects
        self.meta = meta
        self._ranges = _LRU(cache_bytes)
        self._indexes = _LRU(cache_bytes // 8)

    async def locate(self, topic_id: str, partition: int, offset: int) -> list[SegmentRef]:
        """Refs in offset order starting with the one holding ``offset`` (or the next one after a gap)."""
        pk = keys.partition_pk(topic_id, partition)
        found: list[SegmentRef] = []
        for ckpt in await self.meta.query(pk, after=keys.checkpoints_ending_after(offset), limit=8):
            index_key = ckpt.get("index")
            if not index_key or int(ckpt.attrs["end"]) <= offset:
                continue
            refs = await self._index(str(index_key))
            found.extend(r for r in refs.get((topic_id, partition), []) if r.last_offset >= offset)
            if found:
                break
        return found

    async def _index(self, key: str) -> dict:
        cached = self._indexes.get(key)
        if cached is not None:
            return cached[0]
        data = await self.objects.get(key)
        index = decode_index(data)
        self._indexes.put(key, index, len(data))
        return index

    async def read(self, ref: SegmentRef) -> Sequence[BatchEntry]:
        cache_key = (ref.object_key, ref.position)
        cached = self._ranges.get(cache_key)
        if cached is not None:
            return cached[0]
        data = await self.objects.get(ref.object_key, ref.position, ref.position + ref.length)
        entries = decode_partition_blocks(data)
        self._ranges.put(cache_key, entries, len(data))
        return entries
