"""The read side: find which object holds an offset and fetch only that partition's bytes.

Refs the caller already holds (the leader's uncheckpointed tail) come
first; that is the caller's business.  `locate` prefers tier items (one
Query), which hold compacted data and large chunks; if none holds the
offset it asks the checkpoint items (one Query, then the checkpoint's index
object, cached), and if those miss too, the tier items once more.  Tiering
creates a tier item no later than it deletes the checkpoints it covers, and
a tier item only disappears below the log start or inside the same write
that replaces it, so this order never misses an offset that is stored: a
swap that lands between the first two Queries is visible to the third.

Each ingest range is fetched with one ranged GET and cached, so a consumer
reading sequentially costs one GET per ingest object range, not one per
fetch request.  A tier ref names one *chunk* of a tier object (a few MiB of
records, see `tier_codec`): `read` GETs that byte range, checks its CRC-32C
(remembered from the tier item), decodes the records and rebuilds Kafka
batches with their original offsets, timestamps and headers, in a worker
thread so the event loop never stalls on it.  Concurrent reads of one chunk
share a single GET.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Sequence

from . import keys
from .index_objects import decode_index
from .model import SegmentRef
from .ports import MetaStore, ObjectStore
from .segments import BatchEntry, decode_partition_blocks, decode_tier_segment
from .tier_codec import decode_chunk, entries_of
from .tier_items import TierSegment

#: Tier items read per Query while looking for the next non-empty one.
TIER_PAGE = 4
#: Chunk checksums remembered from tier items (a few dozen bytes each).
CHUNK_INFO_ENTRIES = 16_384


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
        self._chunk_info = _LRU(CHUNK_INFO_ENTRIES)
        self._loading: dict[tuple[str, int], asyncio.Future] = {}

    async def locate(self, topic_id: str, partition: int, offset: int) -> list[SegmentRef]:
        """Refs in offset order starting with the one holding ``offset`` (or the next one after a gap)."""
        covered, tier = await self._tier_refs(topic_id, partition, offset)
        if covered:
            return tier
        found = await self._checkpoint_refs(topic_id, partition, offset)
        if found and found[0].first_offset <= offset:
            return found
        covered, tier = await self._tier_refs(topic_id, partition, offset)
        if covered or not found:
            return tier
        if tier and tier[0].first_offset < found[0].first_offset:
            return tier
        return found

    async def _checkpoint_refs(self, topic_id: str, partition: int, offset: int) -> list[SegmentRef]:
        pk = keys.partition_pk(topic_id, partition)
        found: list[SegmentRef] = []
        for ckpt in await self.meta.query(pk, prefix=keys.CHECKPOINT_PREFIX,
                                          after=keys.checkpoints_ending_after(offset), limit=8):
            index_key = ckpt.get("index")
            if not index_key or int(ckpt.attrs["end"]) <= offset:
                continue
            refs = await self._index(str(index_key))
            found.extend(r for r in refs.get((topic_id, partition), []) if r.last_offset >= offset)
            if found:
                break
        return found

    async def _tier_refs(self, topic_id: str, partition: int, offset: int) -> tuple[bool, list[SegmentRef]]:
        """Whether a tier item's range holds ``offset``, and the chunk refs from there on.

        A compacted segment may be empty; the lookup then moves on to the
        next items, so a reader is never handed nothing while data follows.
        """
        pk = keys.partition_pk(topic_id, partition)
        after = keys.tier_sk(offset)
        covered: bool | None = None
        while True:
            items = await self.meta.query(pk, prefix=keys.TIER_PREFIX, after=after, limit=TIER_PAGE)
            refs: list[SegmentRef] = []
            for item in items:
                segment = TierSegment.from_item(item)
                if covered is None:
                    covered = segment.start <= offset
                for chunk in segment.chunks:
                    self._chunk_info.put((segment.object_key, chunk.position), (chunk.crc32c, segment.codec), 1)
                refs.extend(segment.refs(offset))
            if refs or len(items) < TIER_PAGE:
                return bool(covered), refs
            after = items[-1].sk

    async def _index(self, key: str) -> dict:
        cached = self._indexes.get(key)
        if cached is not None:
            return cached[0]
        data = await self.objects.get(key)
        index = decode_index(data)
        self._indexes.put(key, index, len(data))
        return index

    async def read(self, ref: SegmentRef) -> Sequence[BatchEntry]:
        if ref.kind == "tier":
            return await self._read_tier(ref)
        cache_key = (ref.object_key, ref.position)
        cached = self._ranges.get(cache_key)
        if cached is not None:
            return cached[0]
        data = await self.objects.get(ref.object_key, ref.position, ref.position + ref.length)
        entries = decode_partition_blocks(data)
        self._ranges.put(cache_key, entries, len(data))
        return entries

    async def _read_tier(self, ref: SegmentRef) -> Sequence[BatchEntry]:
        cache_key = (ref.object_key, ref.position)
        cached = self._ranges.get(cache_key)
        if cached is not None:
            return cached[0]
        loading = self._loading.get(cache_key)
        if loading is not None:
            return await asyncio.shield(loading)
        loading = asyncio.get_running_loop().create_future()
        loading.add_done_callback(_retrieve)
        self._loading[cache_key] = loading
        try:
            entries = await self._load_tier(ref)
            self._ranges.put(cache_key, entries, sum(len(e.batch) for e in entries))
            loading.set_result(entries)
            return entries
        except asyncio.CancelledError:
            loading.cancel()
            raise
        except Exception as exc:
            loading.set_exception(exc)
            raise
        finally:
            del self._loading[cache_key]

    async def _load_tier(self, ref: SegmentRef) -> list[BatchEntry]:
        info = self._chunk_info.get((ref.object_key, ref.position))
        if info is None:
            # A ref this reader did not locate (its chunk checksum is unknown):
            # read the whole object, whose own checksum covers every byte.
            data = await self.objects.get(ref.object_key)
            return await asyncio.to_thread(_whole_object_entries, data, ref)
        crc, codec = info[0]
        data = await self.objects.get(ref.object_key, ref.position, ref.position + ref.length)
        return await asyncio.to_thread(lambda: entries_of(decode_chunk(data, codec=codec, crc=crc)))


def _whole_object_entries(data: bytes, ref: SegmentRef) -> list[BatchEntry]:
    _, records = decode_tier_segment(data)
    return entries_of([r for r in records if ref.first_offset <= r.offset <= ref.last_offset])


def _retrieve(future: asyncio.Future) -> None:
    """Mark a shared load's failure as seen: the loader re-raises it to its own caller."""
    if not future.cancelled():
        future.exception()
