"""Consumer-group durable state: the committed generation and committed offsets.

Membership lives in the coordinator's memory; what must survive a
coordinator restart or failover is here.  Every offset commit is one write
that *checks* the group's stored generation, so a member of an old
generation can never move an offset, whichever broker it talks to.

Items (partition key ``group#<name>``):
* ``state``: generation, protocol type/name, leader, member count,
  ``empty_since_ms`` and a version for compare-and-set.
* ``off#<topic>#<partition>``: offset, metadata, leader epoch, commit time.
A registry item (``groups`` / ``<name>``) makes groups listable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from . import keys
from .conditions import ABSENT, Check, Delete, Put, WriteOp, where
from .errors import Conflict, Fenced
from .model import Item
from .ports import MetaStore

MAX_OPS_PER_WRITE = 99  # one slot for the generation check

ILLEGAL_GENERATION = 22


class GenerationFenced(Fenced):
    """The commit names a generation the group has left behind."""

    kafka_code = ILLEGAL_GENERATION


@dataclass(frozen=True, slots=True)
class GroupRecord:
    name: str
    generation: int
    protocol_type: str | None
    protocol: str | None
    leader: str | None
    members: int
    empty_since_ms: int | None
    version: int

    def to_item(self) -> Item:
        return Item(keys.group_pk(self.name), keys.STATE_SK, {
            "generation": self.generation, "protocol_type": self.protocol_type, "protocol": self.protocol,
            "leader": self.leader, "members": self.members, "empty_since_ms": self.empty_since_ms,
            "version": self.version,
        })

    @classmethod
    def from_item(cls, name: str, item: Item) -> "GroupRecord":
        a = item.attrs
        return cls(name, int(a.get("generation", 0)), a.get("protocol_type"), a.get("protocol"), a.get("leader"),
                   int(a.get("members", 0)), a.get("empty_since_ms"), int(a.get("version", 0)))


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int
    metadata: str | None
    leader_epoch: int
    commit_ms: int


class GroupStore:
    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta

    async def load(self, name: str) -> GroupRecord | None:
        item = await self.meta.get(keys.group_pk(name), keys.STATE_SK)
        return None if item is None else GroupRecord.from_item(name, item)

    async def save(self, record: GroupRecord, previous: GroupRecord | None) -> GroupRecord:
        """Store a new generation (or membership change), conditioned on what we last saw."""
        updated = GroupRecord(record.name, record.generation, record.protocol_type, record.protocol, record.leader,
                              record.members, record.empty_since_ms, (previous.version if previous else 0) + 1)
        ops: list[WriteOp] = [Put(updated.to_item(), ABSENT if previous is None else where(version=previous.version))]
        if previous is None:
            registry = Item(keys.GROUPS_PK, record.name, {"created": True})
            existing = await self.meta.get(keys.GROUPS_PK, record.name)
            if existing is None:
                ops.append(Put(registry, ABSENT))
        await self.meta.write(ops)
        return updated

    async def list_names(self) -> list[str]:
        return [i.sk for i in await self.meta.query(keys.GROUPS_PK)]

    def _generation_check(self, name: str, generation: int, current: GroupRecord | None) -> Check:
        if generation < 0:
            # A consumer outside any group may commit only while the group is empty.
            if current is None:
                return Check(keys.group_pk(name), keys.STATE_SK, ABSENT)
            return Check(keys.group_pk(name), keys.STATE_SK, where(version=current.version, members=0))
        return Check(keys.group_pk(name), keys.STATE_SK, where(generation=generation))

    async def commit(self, name: str, generation: int, offsets: Sequence[CommittedOffset]) -> None:
        """Commit offsets iff the stored generation still equals ``generation``.

        Raises `GenerationFenced` (ILLEGAL_GENERATION) otherwise; nothing is written then.
        Batches of more than 99 partitions become several writes, each checked: only
        a generation change between two of them (another coordinator taking over
        mid-commit) can leave such a commit partly applied, where Kafka's is atomic.
        """
        current = await self.load(name) if generation < 0 else None
        if generation < 0 and current is not None and current.members > 0:
            raise GenerationFenced("group has members; join it to commit", group=name)
        for start in range(0, len(offsets), MAX_OPS_PER_WRITE):
            chunk = offsets[start:start + MAX_OPS_PER_WRITE]
            ops: list[WriteOp] = [self._generation_check(name, generation, current)]
            ops += [Put(Item(keys.group_pk(name), keys.group_offset_sk(o.topic, o.partition), {
                "topic": o.topic, "partition": o.partition, "offset": o.offset, "metadata": o.metadata,
                "leader_epoch": o.leader_epoch, "commit_ms": o.commit_ms})) for o in chunk]
            if generation < 0 and current is None:
                # Create the group record in the same write so the group becomes listable.
                ops[0] = Put(GroupRecord(name, 0, None, None, None, 0, chunk[0].commit_ms, 1).to_item(), ABSENT)
                registry = await self.meta.get(keys.GROUPS_PK, name)
                if registry is None:
                    ops.append(Put(Item(keys.GROUPS_PK, name, {"created": True}), ABSENT))
            try:
                await self.meta.write(ops)
            except Conflict as exc:
                if exc.index == 0:
                    raise GenerationFenced("stale generation", group=name, generation=generation,
                                           current=exc.current.get("generation") if exc.current else None) from exc
                raise
            if generation < 0 and current is None:
                current = await self.load(name)

    async def offsets(self, name: str) -> list[CommittedOffset]:
        items = await self.meta.query(keys.group_pk(name), prefix=keys.OFFSET_PREFIX)
        return [_offset_of(i) for i in items]

    async def delete_offsets(self, name: str, partitions: Iterable[tuple[str, int]]) -> None:
        ops = [Delete(keys.group_pk(name), keys.group_offset_sk(t, p)) for t, p in partitions]
        for start in range(0, len(ops), 100):
            await self.meta.write(ops[start:start + 100])

    async def expire_offsets(self, name: str, expired: Sequence[CommittedOffset]) -> int:
        """Delete offsets that expired, each only if it is still the commit that was judged expired.

        A commit that lands between the judgement and the delete (another
        coordinator, after a failover) changes ``commit_ms`` and so survives.
        Returns how many were deleted; a batch that lost such a race is left
        for the next sweep.
        """
        deleted = 0
        for start in range(0, len(expired), MAX_OPS_PER_WRITE):
            chunk = expired[start:start + MAX_OPS_PER_WRITE]
            ops: list[WriteOp] = [Delete(keys.group_pk(name), keys.group_offset_sk(o.topic, o.partition),
                                         where(offset=o.offset, commit_ms=o.commit_ms)) for o in chunk]
            try:
                await self.meta.write(ops)
            except Conflict:
                continue
            deleted += len(chunk)
        return deleted

    async def delete_group(self, name: str, record: GroupRecord | None) -> None:
        """Remove a group and all its offsets (the caller checked it has no members)."""
        offsets = await self.offsets(name)
        await self.delete_offsets(name, [(o.topic, o.partition) for o in offsets])
        ops: list[WriteOp] = [Delete(keys.GROUPS_PK, name)]
        if record is not None:
            ops.append(Delete(keys.group_pk(name), keys.STATE_SK, where(version=record.version)))
        await self.meta.write(ops)


def _offset_of(item: Item) -> CommittedOffset:
    a = item.attrs
    return CommittedOffset(str(a["topic"]), int(a["partition"]), int(a["offset"]), a.get("metadata"),
                           int(a.get("leader_epoch", -1)), int(a.get("commit_ms", 0)))
