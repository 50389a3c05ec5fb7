"""The group coordinator: joins, syncs, heartbeats, leaves and offset commits.

Each group's in-memory state is guarded by its own lock; a request that must
wait (JoinGroup until the rebalance completes, SyncGroup until the leader's
assignment arrives) takes a future under the lock and awaits it outside.
Every new generation is stored (conditionally) before any member hears of
it, and offset commits check that stored generation, so a stale member is
fenced even by a coordinator that has just taken over.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from tidelog.storage.clock import Clock
from tidelog.storage.errors import Conflict
from tidelog.storage.groups import CommittedOffset, GenerationFenced, GroupRecord, GroupStore

from ..errors import ErrorCode
from .state import COMPLETING, DEAD, EMPTY, PREPARING, STABLE, Group, Member

log = logging.getLogger("tidelog.groups")

MAX_METADATA = 4096
OFFSET_METADATA_TOO_LARGE = 12


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: int
    generation: int = -1
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str = ""
    member_id: str = ""
    members: tuple = ()  # (member_id, instance_id, metadata) for the leader only


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol: str | None = None


class GroupCoordinator:
    def __init__(self, store: GroupStore, clock: Clock, *, initial_rebalance_delay_ms: int = 300,
                 min_session_timeout_ms: int = 1000, max_session_timeout_ms: int = 1_800_000,
                 offsets_retention_ms: int = 7 * 24 * 3600 * 1000) -> None:
        self.store = store
        self.clock = clock
        self.initial_delay = initial_rebalance_delay_ms
        self.min_session = min_session_timeout_ms
        self.max_session = max_session_timeout_ms
        self.offsets_retention_ms = offsets_retention_ms
        self.groups: dict[str, Group] = {}
        self._records: dict[str, GroupRecord | None] = {}
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="group-ticker")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for group in self.groups.values():
            for m in group.members.values():
                for fut in (m.join_future, m.sync_future):
                    if fut is not None and not fut.done():
                        fut.set_result(None)

    # --- loading ------------------------------------------------------------------
    async def _group(self, name: str, create: bool) -> Group | None:
        group = self.groups.get(name)
        if group is not None:
            return group
        record = await self.store.load(name)
        if record is None and not create:
            return None
        group = Group(name)
        if record is not None:
            group.generation = record.generation
            group.protocol_type = record.protocol_type
            group.protocol = record.protocol
            group.empty_since_ms = record.empty_since_ms
            if record.members > 0:
                # Members from before a coordinator restart must rejoin; move the
                # stored generation on so their old generation is fenced at once.
                group.generation += 1
                group.empty_since_ms = self.clock.now_ms()
                record = await self._save(group, record)
        self._records[name] = record
        self.groups[name] = self.groups.get(name, group)
        return self.groups[name]

    async def _save(self, group: Group, previous: GroupRecord | None = None) -> GroupRecord:
        previous = previous if previous is not None else self._records.get(group.name)
        record = GroupRecord(group.name, group.generation, group.protocol_type, group.protocol, group.leader,
                             len(group.members), group.empty_since_ms, 0)
        try:
            saved = await self.store.save(record, previous)
        except Conflict:
            # Another coordinator wrote this group (failover race): adopt its view
            # and move past its generation so both never share one.
            latest = await self.store.load(group.name)
            if latest is not None and latest.generation >= group.generation:
                group.generation = latest.generation + 1
            record = GroupRecord(group.name, group.generation, group.protocol_type, group.protocol, group.leader,
                                 len(group.members), group.empty_since_ms, 0)
            saved = await self.store.save(record, latest)
        self._records[group.name] = saved
        return saved

    # --- join ------------------------------------------------------------------------
    async def join(self, *, group_id: str, member_id: str, instance_id: str | None, client_id: str,
                   client_host: str, session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                   protocols: list[tuple[str, bytes]], require_known_member: bool) -> JoinResult:
        if not group_id:
            return JoinResult(ErrorCode.INVALID_GROUP_ID, member_id=member_id)
        if not self.min_session <= session_timeout_ms <= self.max_session:
            return JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, member_id=member_id)
        if rebalance_timeout_ms <= 0:
            rebalance_timeout_ms = session_timeout_ms
        group = await self._group(group_id, create=True)
        async with group.lock:
            if group.state == DEAD:
                return JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id=member_id)
            if not protocols or not group.supports(protocol_type, [n for n, _ in protocols]):
                return JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id)
            now = self.clock.now_ms()
            if member_id == "":
                if instance_id is not None and instance_id in group.instances:
                    return await self._rejoin_static(group, instance_id, client_id, client_host, session_timeout_ms,
                                                     rebalance_timeout_ms, protocol_type, protocols, now)
                member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
                if require_known_member and instance_id is None:
                    group.pending[member_id] = now + session_timeout_ms
                    return JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id=member_id)
            else:
                known = member_id in group.members or member_id in group.pending
                if not known:
                    return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id)
                if instance_id is not None and group.instances.get(instance_id, member_id) != member_id:
                    return JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=member_id)
            group.pending.pop(member_id, None)
            member = group.members.get(member_id)
            if member is None:
                member = Member(member_id, instance_id, client_id, client_host, session_timeout_ms,
                                rebalance_timeout_ms, protocol_type, list(protocols), now)
                group.members[member_id] = member
                if instance_id is not None:
                    group.instances[instance_id] = member_id
            else:
                member.protocols = list(protocols)
                member.session_timeout_ms = session_timeout_ms
                member.rebalance_timeout_ms = rebalance_timeout_ms
                member.last_seen_ms = now
            if member.join_future is not None and not member.join_future.done():
                member.join_future.set_result(JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, member_id=member_id))
            member.join_future = asyncio.get_running_loop().create_future()
            future = member.join_future
            if group.state != PREPARING:
                self._prepare_rebalance(group, now)
            await self._maybe_complete_join(group)
        return await future

    async def _rejoin_static(self, group: Group, instance_id: str, client_id: str, client_host: str,
                             session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                             protocols: list[tuple[str, bytes]], now: int) -> JoinResult:
        """A restarted static member takes over its old identity without a rebalance when nothing changed."""
        old_id = group.instances[instance_id]
        old = group.members.pop(old_id)
        for fut in (old.join_future, old.sync_future):
            if fut is not None and not fut.done():
                fut.set_result(JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=old_id) if fut is old.join_future
                               else SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
        member = Member(new_id, instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                        protocol_type, list(protocols), now, assignment=old.assignment)
        group.members[new_id] = member
        group.instances[instance_id] = new_id
        if group.leader == old_id:
            group.leader = new_id
        unchanged = old.protocols == member.protocols
        if group.state == STABLE and unchanged and group.leader != new_id:
            return JoinResult(ErrorCode.NONE, group.generation, group.protocol_type, group.protocol, group.leader,
                              new_id)
        member.join_future = asyncio.get_running_loop().create_future()
        future = member.join_future
        if group.state != PREPARING:
            self._prepare_rebalance(group, now)
        await self._maybe_complete_join(group)
        return await future

    def _prepare_rebalance(self, group: Group, now: int) -> None:
        if group.state == COMPLETING:
            for m in group.members.values():
                if m.sync_future is not None and not m.sync_future.done():
                    m.sync_future.set_result(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        was_empty = group.state == EMPTY
        group.state = PREPARING
        group.rebalance_started_ms = now
        group.join_not_before_ms = now + (self.initial_delay if was_empty else 0)

    async def _maybe_complete_join(self, group: Group, *, timed_out: bool = False) -> None:
        if group.state != PREPARING:
            return
        now = self.clock.now_ms()
        if not timed_out and not (group.all_joined() and now >= group.join_not_before_ms):
            return
        for member_id in [m for m, member in group.members.items() if member.join_future is None]:
            self._remove(group, member_id)
        group.pending.clear()
        group.generation += 1
        if not group.members:
            group.state = EMPTY
            group.protocol = None
            group.leader = None
            group.empty_since_ms = now
            await self._save(group)
            return
        group.protocol_type = next(iter(group.members.values())).protocol_type
        group.protocol = group.select_protocol()
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = COMPLETING
        group.empty_since_ms = None
        await self._save(group)
        listing = tuple((m.member_id, m.instance_id, m.metadata_for(group.protocol)) for m in group.members.values())
        for m in group.members.values():
            m.last_seen_ms = now
            result = JoinResult(ErrorCode.NONE, group.generation, group.protocol_type, group.protocol, group.leader,
                                m.member_id, listing if m.member_id == group.leader else ())
            if m.join_future is not None and not m.join_future.done():
                m.join_future.set_result(result)
            m.join_future = None

    def _remove(self, group: Group, member_id: str) -> None:
        member = group.members.pop(member_id, None)
        if member is None:
            return
        if member.instance_id is not None and group.instances.get(member.instance_id) == member_id:
            del group.instances[member.instance_id]
        if member.join_future is not None and not member.join_future.done():
            member.join_future.set_result(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
        if member.sync_future is not None and not member.sync_future.done():
            member.sync_future.set_result(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))

    # --- sync ------------------------------------------------------------------------
    async def sync(self, *, group_id: str, generation: int, member_id: str, instance_id: str | None,
                   protocol_type: str | None, protocol: str | None,
                   assignments: list[tuple[str, bytes]]) -> SyncResult:
        group = await self._group(group_id, create=False)
        if group is None:
            return SyncResult(ErrorCode.UNKNOWN_MEMBER_ID)
        async with group.lock:
            member = group.members.get(member_id)
            error = self._validate_member(group, member, member_id, instance_id, generation)
            if error:
                return SyncResult(error)
            if (protocol_type is not None and protocol_type != group.protocol_type) or \
                    (protocol is not None and protocol != group.protocol):
                return SyncResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
            member.last_seen_ms = self.clock.now_ms()
            if group.state == PREPARING:
                return SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)
            if group.state == STABLE:
                return SyncResult(ErrorCode.NONE, member.assignment, group.protocol_type, group.protocol)
            member.sync_future = asyncio.get_running_loop().create_future()
            future = member.sync_future
            if member_id == group.leader:
                given = dict(assignments)
                for m in group.members.values():
                    m.assignment = given.get(m.member_id, b"")
                group.state = STABLE
                for m in group.members.values():
                    if m.sync_future is not None and not m.sync_future.done():
                        m.sync_future.set_result(SyncResult(ErrorCode.NONE, m.assignment, group.protocol_type,
                                                            group.protocol))
                    m.sync_future = None
        return await future

    def _validate_member(self, group: Group, member: Member | None, member_id: str, instance_id: str | None,
                         generation: int) -> int:
        if instance_id is not None:
            owner = group.instances.get(instance_id)
            if owner is not None and owner != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        return ErrorCode.NONE

    # --- heartbeat and leave -------------------------------------------------------------
    async def heartbeat(self, *, group_id: str, generation: int, member_id: str, instance_id: str | None) -> int:
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        async with group.lock:
            member = group.members.get(member_id)
            error = self._validate_member(group, member, member_id, instance_id, generation)
            if error:
                return error
            member.last_seen_ms = self.clock.now_ms()
            if group.state == PREPARING:
                return ErrorCode.REBALANCE_IN_PROGRESS
            return ErrorCode.NONE

    async def leave(self, *, group_id: str, members: list[tuple[str, str | None]]) -> tuple[int, list[int]]:
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.NONE, [ErrorCode.UNKNOWN_MEMBER_ID] * len(members)
        errors = []
        async with group.lock:
            for member_id, instance_id in members:
                if instance_id is not None:
                    owner = group.instances.get(instance_id)
                    if owner is None:
                        errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                        continue
                    if member_id and owner != member_id:
                        errors.append(ErrorCode.FENCED_INSTANCE_ID)
                        continue
                    member_id = owner
                if member_id not in group.members:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                self._remove(group, member_id)
                errors.append(ErrorCode.NONE)
            if any(e == ErrorCode.NONE for e in errors):
                await self._membership_changed(group)
        return ErrorCode.NONE, errors

    async def _membership_changed(self, group: Group) -> None:
        now = self.clock.now_ms()
        if group.state in (STABLE, COMPLETING):
            if group.members:
                self._prepare_rebalance(group, now)
            else:
                group.state = PREPARING
        if group.state == PREPARING:
            await self._maybe_complete_join(group, timed_out=not group.members or group.all_joined())

    # --- background expiry --------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            for group in list(self.groups.values()):
                try:
                    await self._tick(group)
                except Exception:  # noqa: BLE001 - one group's trouble must not stop the rest
                    log.exception("group maintenance failed", extra={"group": group.name})

    async def _tick(self, group: Group) -> None:
        now = self.clock.now_ms()
        async with group.lock:
            for member_id, deadline in list(group.pending.items()):
                if now > deadline:
                    del group.pending[member_id]
            if group.state in (STABLE, COMPLETING):
                expired = [m.member_id for m in group.members.values()
                           if m.sync_future is None and now - m.last_seen_ms > m.session_timeout_ms]
                if expired:
                    for member_id in expired:
                        log.info("member session expired", extra={"group": group.name, "member": member_id})
                        self._remove(group, member_id)
                    await self._membership_changed(group)
            elif group.state == PREPARING:
                if now >= group.rebalance_deadline_ms() or not group.members:
                    await self._maybe_complete_join(group, timed_out=True)
                else:
                    await self._maybe_complete_join(group)

    # --- offsets -----------------------------------------------------------------------------------
    async def commit_offsets(self, *, group_id: str, generation: int, member_id: str, instance_id: str | None,
                             offsets: list[CommittedOffset]) -> int:
        """Returns one error code for the whole commit (per-partition validation is the caller's)."""
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = await self._group(group_id, create=True)
        async with group.lock:
            if generation < 0 and not member_id:
                if group.members:
                    return ErrorCode.UNKNOWN_MEMBER_ID
            else:
                member = group.members.get(member_id)
                error = self._validate_member(group, member, member_id, instance_id, generation)
                if error:
                    return error
                if group.state == COMPLETING:
                    return ErrorCode.REBALANCE_IN_PROGRESS
                member.last_seen_ms = self.clock.now_ms()
            try:
                await self.store.commit(group_id, generation if member_id else -1, offsets)
            except GenerationFenced:
                return ErrorCode.ILLEGAL_GENERATION
            if generation < 0 and not member_id:
                self._records[group_id] = await self.store.load(group_id)
            return ErrorCode.NONE

    async def fetch_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        group = await self._group(group_id, create=False)
        offsets = {(o.topic, o.partition): o for o in await self.store.offsets(group_id)}
        if group is not None and not group.members and group.empty_since_ms is not None:
            if self.clock.now_ms() - group.empty_since_ms > self.offsets_retention_ms and offsets:
                await self.store.delete_offsets(group_id, list(offsets))
                return {}
        return offsets

    async def forget(self, should_forget) -> None:
        """Drop in-memory state of groups another broker now coordinates (or all, after
        our session was fenced).  Waiting members are told NOT_COORDINATOR and will
        rediscover the coordinator, which reloads the group from the store."""
        for name in [n for n in self.groups if should_forget(n)]:
            group = self.groups.pop(name)
            self._records.pop(name, None)
            for m in group.members.values():
                if m.join_future is not None and not m.join_future.done():
                    m.join_future.set_result(JoinResult(ErrorCode.NOT_COORDINATOR, member_id=m.member_id))
                if m.sync_future is not None and not m.sync_future.done():
                    m.sync_future.set_result(SyncResult(ErrorCode.NOT_COORDINATOR))

    # --- admin ----------------------------------------------------------------------------------------
    async def list_groups(self) -> list[Group]:
        names = set(await self.store.list_names()) | set(self.groups)
        out = []
        for name in sorted(names):
            group = await self._group(name, create=False)
            if group is not None and group.state != DEAD:
                out.append(group)
        return out

    async def describe(self, group_id: str) -> Group | None:
        return await self._group(group_id, create=False)

    async def delete_group(self, group_id: str) -> int:
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND
        async with group.lock:
            if group.members:
                return ErrorCode.NON_EMPTY_GROUP
            await self.store.delete_group(group_id, await self.store.load(group_id))
            group.state = DEAD
            self.groups.pop(group_id, None)
            self._records.pop(group_id, None)
        return ErrorCode.NONE

    async def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]],
                             subscribed: set[str]) -> tuple[int, dict[tuple[str, int], int]]:
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        errors = {}
        deletable = []
        for tp in partitions:
            if group.members and tp[0] in subscribed:
                errors[tp] = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            else:
                errors[tp] = ErrorCode.NONE
                deletable.append(tp)
        if deletable:
            await self.store.delete_offsets(group_id, deletable)
        return ErrorCode.NONE, errors
