"""Garbage collection: objects nothing refers to, commit-log items checkpoints
cover, and the leftovers of deleted topics.

**A referenced object is never deleted.**  The references, read fresh on
every sweep:

* a tier object is referenced by the tier item naming it;
* an index object by any checkpoint item naming it;
* an ingest object by a checkpoint item whose index object lists a range
  of *that checkpoint's partition* in it, or by a commit-log item not yet
  covered by a newer checkpoint of its session (recovery replays those).

Commit-log coverage.  Recovery of a partition replays the commit log of the
session its newest checkpoint names, from that checkpoint's ``log_from``.
So session S's item ``seq`` is still needed only while some partition's
newest checkpoint names S with ``log_from <= seq``; below the smallest such
``log_from`` (or entirely, when no newest checkpoint names S) items are
covered and deleted -- except a live session's latest item, which is what
lets `gc.find_orphans` prove that the session's earlier seqs are settled.  Every partition a session writes has a newest
checkpoint naming that session (acquiring writes one in the same
transaction as the lease), until a newer owner replaced it after replaying
the log.  The commit logs are read *before* the checkpoints, so an item
the sweep sees was committed before the checkpoints were read and the rule
applies to it.

Timing.  Unreferenced is not enough: a reader may have located an object a
moment before its last reference went away, and a writer references its
object only after uploading it.  Hence:

* an object younger than ``min_age_ms`` (by its last-modified time) is
  never considered: that bounds every upload-to-commit window (a flush's
  commit, a checkpoint's items, a tiering or compaction swap, whose
  services give up after ``TierPolicy.max_commit_delay_ms``, which must be
  smaller);
* an object is deleted only after sweeps have found it unreferenced for
  ``grace_ms``: the first sighting is stored (one small JSON object per
  sweep under ``gc/state/``, written create-only with a sequence number,
  which also makes a second sweeper running at the same time stand down),
  and the clock starts when the scan that found it unreferenced finished,
  which is after the reference disappeared.  An old object that was
  referenced and then superseded is thus kept ``grace_ms`` after that;
* ingest objects are additionally checked with `gc.find_orphans`, which
  proves a flush whose commit-log item is absent can never commit any more.
  That module reasons about commit-log items only; since this sweeper
  deletes covered ones, only the two checks together are a deletion test.

If any referenced index object cannot be read, no ingest object is deleted
in that sweep: the references are unknown.

Deleted topics.  A lease naming a topic id that is not in the catalog
belongs to a deleted topic (leases are read before the catalog, and topic
ids are never reused): its partition items (checkpoints, tier items,
maintenance items) are deleted, and its lease once no live session holds it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from . import keys
from .catalog import Catalog
from .clock import Clock
from .conditions import Delete, where
from .errors import AlreadyExists, Conflict, CorruptData, InvalidRequest, NotFound
from .gc import find_orphans
from .model import Item, ObjectInfo
from .ports import MetaStore, ObjectStore
from .tier_state import IndexCache, bounded_map, delete_items, lease_is_live

log = logging.getLogger("tidelog.sweeper")

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    grace_ms: int = HOUR_MS
    min_age_ms: int = HOUR_MS
    concurrency: int = 16

    def __post_init__(self) -> None:
        if self.grace_ms < 0 or self.min_age_ms < 0 or self.concurrency <= 0:
            raise InvalidRequest("sweep policy values must not be negative", policy=repr(self))


@dataclass(slots=True)
class SweepResult:
    state: str = "swept"  # swept | busy (another sweep claimed the round)
    objects_listed: int = 0
    objects_referenced: int = 0
    objects_pending: int = 0
    objects_deleted: dict[str, int] = field(default_factory=dict)
    commit_items_deleted: int = 0
    deleted_topic_items: int = 0
    leases_deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------


def covered_below(newest_checkpoints: Iterable[Item]) -> dict[str, int]:
    """Per session, the first commit seq still needed: the smallest ``log_from`` among
    newest checkpoints naming it.  Sessions absent from the result need none."""
    needed: dict[str, int] = {}
    for item in newest_checkpoints:
        session, log_from = str(item.attrs["session"]), int(item.attrs["log_from"])
        needed[session] = min(needed.get(session, log_from), log_from)
    return needed


def next_marks(previous: Mapping[str, int], unreferenced: Iterable[str], now_ms: int) -> dict[str, int]:
    """First sightings of unreferenced objects; an object seen referenced starts over."""
    return {key: previous.get(key, now_ms) for key in unreferenced}


def due(marks: Mapping[str, int], now_ms: int, grace_ms: int) -> list[str]:
    return sorted(k for k, seen in marks.items() if now_ms - seen >= grace_ms)


def kind_of(key: str) -> str:
    return key.split("/", 1)[0]


# --------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _References:
    objects: set[str] = field(default_factory=set)
    ingest_known: bool = True
    newest: list[Item] = field(default_factory=list)
    index_needs: list[tuple[str, str, int]] = field(default_factory=list)  # (index key, topic id, partition)


class Sweeper:
    def __init__(self, objects: ObjectStore, meta: MetaStore, clock: Clock, policy: SweepPolicy = SweepPolicy(),
                 index_cache: IndexCache | None = None) -> None:
        self.objects = objects
        self.meta = meta
        self.clock = clock
        self.policy = policy
        self.indexes = index_cache or IndexCache(objects, max_entries=4096)

    async def sweep(self) -> SweepResult:
        result = SweepResult()
        seq, marks, old_states = await self._load_state()
        # Order matters: objects, then commit logs, then leases, catalog and checkpoints.
        listed: dict[str, ObjectInfo] = {}
        for root in (keys.INGEST_ROOT, keys.INDEX_ROOT, keys.TIER_ROOT):
            async for info in self.objects.list(root):
                listed[info.key] = info
        result.objects_listed = len(listed)
        live = await self._live_sessions()
        sessions = {s for s in map(keys.session_of_object, listed) if s is not None} | live
        logs = {s: await self.meta.query(keys.commit_log_pk(s)) for s in sorted(sessions)}
        refs = await self._partition_references(result)
        needed = covered_below(refs.newest)
        covered: list[tuple[str, str]] = []
        for session, items in logs.items():
            first_needed = needed.get(session)
            for item in items:
                if item is items[-1] and session in live:
                    continue  # a live session's latest item proves its earlier seqs settled (see gc)
                if first_needed is None or int(item.sk) < first_needed:
                    covered.append((item.pk, item.sk))
                elif not item.get("void"):
                    refs.objects.add(str(item.attrs["object"]))
        await self._ingest_references(refs, result)
        result.objects_referenced = len(refs.objects & listed.keys())

        now = self.clock.now_ms()
        old_enough = now - self.policy.min_age_ms
        unreferenced = [k for k, info in listed.items()
                        if k not in refs.objects and info.last_modified_ms <= old_enough
                        and (refs.ingest_known or kind_of(k) != "ingest")]
        marks = next_marks(marks, unreferenced, now)
        doomed = due(marks, now, self.policy.grace_ms)
        doomed_ingest = [k for k in doomed if kind_of(k) == "ingest"]
        if doomed_ingest:
            orphans = set(await find_orphans(self.objects, self.meta, self.policy.min_age_ms, now))
            doomed = [k for k in doomed if kind_of(k) != "ingest" or k in orphans]
        remaining = {k: v for k, v in marks.items() if k not in set(doomed)}
        if not await self._claim(seq + 1, remaining):
            result.state = "busy"
            return result
        result.objects_pending = len(remaining)
        await bounded_map(self.objects.delete, doomed, self.policy.concurrency)
        for key in doomed:
            result.objects_deleted[kind_of(key)] = result.objects_deleted.get(kind_of(key), 0) + 1
        result.commit_items_deleted = await delete_items(self.meta, covered, concurrency=self.policy.concurrency)
        await bounded_map(self.objects.delete, old_states, self.policy.concurrency)
        return result

    async def _live_sessions(self) -> set[str]:
        """Sessions that may still commit: each node's current epoch, alive and unfenced."""
        return {keys.session_name(int(b.attrs["node_id"]), int(b.attrs["epoch"]))
                for b in await self.meta.query(keys.BROKERS_PK)
                if b.get("alive", True) and not b.get("fenced", False)}

    async def _partition_references(self, result: SweepResult) -> _References:
        refs = _References()
        leases = await self.meta.query(keys.LEASES_PK)
        live_ids = {t.topic_id for t in await Catalog(self.meta).list()}
        for lease in leases:
            topic_id, partition = str(lease.attrs["topic_id"]), int(lease.attrs["partition"])
            pk = keys.partition_pk(topic_id, partition)
            if topic_id not in live_ids:
                await self._drop_partition(lease, pk, result)
                continue
            ckpts = await self.meta.query(pk, prefix=keys.CHECKPOINT_PREFIX)
            if ckpts:
                refs.newest.append(ckpts[-1])
            for c in ckpts:
                if c.get("index"):
                    refs.objects.add(str(c.attrs["index"]))
                    refs.index_needs.append((str(c.attrs["index"]), topic_id, partition))
            for t in await self.meta.query(pk, prefix=keys.TIER_PREFIX):
                if t.get("object"):
                    refs.objects.add(str(t.attrs["object"]))
        return refs

    async def _ingest_references(self, refs: _References, result: SweepResult) -> None:
        for index_key, topic_id, partition in refs.index_needs:
            try:
                for r in await self.indexes.refs(index_key, topic_id, partition):
                    refs.objects.add(r.object_key)
            except (NotFound, CorruptData) as exc:
                refs.ingest_known = False
                result.errors.append(f"index object unreadable; keeping every ingest object key={index_key}: {exc}")
                log.error("index object unreadable; no ingest object deleted this sweep",
                          extra={"object": index_key, "error": str(exc)})

    async def _drop_partition(self, lease: Item, pk: str, result: SweepResult) -> None:
        items = await self.meta.query(pk)
        result.deleted_topic_items += await delete_items(self.meta, ((i.pk, i.sk) for i in items),
                                                         concurrency=self.policy.concurrency)
        if await lease_is_live(self.meta, lease):
            return
        try:
            await self.meta.write([Delete(lease.pk, lease.sk, where(version=int(lease.attrs.get("version", 0))))])
            result.leases_deleted += 1
        except Conflict:
            pass  # changed since we read it; the next sweep looks again

    async def _load_state(self) -> tuple[int, dict[str, int], list[str]]:
        states = [info.key async for info in self.objects.list(keys.GC_STATE_ROOT)]
        if not states:
            return -1, {}, []
        latest = max(states)
        seq = int(latest[len(keys.GC_STATE_ROOT):].split(".", 1)[0])
        try:
            doc = json.loads(await self.objects.get(latest))
            marks = {str(k): int(v) for k, v in doc["marks"].items()}
        except (NotFound, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Losing the sightings only delays deletions: every clock starts over.
            log.warning("sweep state unreadable; starting over", extra={"object": latest, "error": repr(exc)})
            marks = {}
        return seq, marks, states

    async def _claim(self, seq: int, marks: Mapping[str, int]) -> bool:
        body = json.dumps({"seq": seq, "written_ms": self.clock.now_ms(), "marks": dict(marks)},
                          separators=(",", ":")).encode()
        try:
            await self.objects.put_if_absent(keys.gc_state_key(seq), body)
        except AlreadyExists:
            return False
        return True
