"""The group coordinator: joins, syncs, heartbeats, leaves and offset commits.

Each group's in-memory state is guarded by its own lock; a request that must
wait (JoinGroup until the rebalance completes, SyncGroup until the leader's
assignment arrives) takes a future under the lock and awaits it outside.

Invariants:

* Every new generation is stored (conditionally) before any member hears of
  it, and offset commits check that stored generation, so a stale member is
  fenced even by a coordinator that has just taken over.  If storing a
  generation fails, the group stays in PreparingRebalance with its old
  generation and the background ticker retries; nobody is told anything.
* A group is loaded from the store at most once per coordinator (loading may
  move the stored generation on, see `_load`), and only by the broker that
  coordinates it: the request handlers check ownership first, listing takes
  an ownership test, and the offset-expiry sweep reads groups that are not
  loaded here from the store without loading them.  `forget` drops groups
  another broker coordinates now; requests still holding one are answered
  NOT_COORDINATOR.
* Member liveness follows Kafka: a member awaiting its JoinGroup or SyncGroup
  answer is alive; any other member must be heard from (heartbeat, commit,
  join, sync) within its session timeout, in every state.  Sessions and
  rebalance deadlines run on the monotonic clock (a wall-clock step must not
  expire every member); offset retention runs on the wall clock, because
  commit times are stored and outlive this process.
* Committed offsets expire as in Kafka (KIP-211): for a group that has had
  members, once it has been Empty for the retention period; for offsets
  committed from outside any group, a retention period after their last
  commit; for a Stable consumer group, offsets of topics it no longer
  subscribes to, a retention period after their last commit.  OffsetFetch
  never returns an expired offset; a periodic sweep deletes them, and
  removes Empty groups that have no offsets left.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Callable

from tidelog.storage.clock import Clock
from tidelog.storage.errors import Conflict, TidelogError
from tidelog.storage.groups import CommittedOffset, GenerationFenced, GroupRecord, GroupStore

from ..errors import ErrorCode
from .state import COMPLETING, CONSUMER_PROTOCOL, DEAD, EMPTY, PREPARING, STABLE, Group, Member

log = logging.getLogger("tidelog.groups")

MAX_METADATA = 4096
OFFSET_METADATA_TOO_LARGE = 12
TICK_S = 0.1


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
                 offsets_retention_ms: int = 7 * 24 * 3600 * 1000,
                 offsets_retention_check_interval_ms: int = 600_000) -> None:
        self.store = store
        self.clock = clock
        self.initial_delay = initial_rebalance_delay_ms
        self.min_session = min_session_timeout_ms
        self.max_session = max_session_timeout_ms
        self.offsets_retention_ms = offsets_retention_ms
        self.retention_check_interval_ms = offsets_retention_check_interval_ms
        self.groups: dict[str, Group] = {}
        self._records: dict[str, GroupRecord | None] = {}
        self._load_lock = asyncio.Lock()
        self._ticker: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._next_sweep_ms: int | None = None
        self._stopped = False

    def start(self) -> None:
        self._next_sweep_ms = self.clock.monotonic_ms() + self.retention_check_interval_ms
        self._ticker = asyncio.create_task(self._tick_loop(), name="group-ticker")

    async def stop(self) -> None:
        """Stop coordinating: waiting joins and syncs are told NOT_COORDINATOR, so clients look again."""
        self._stopped = True
        tasks = [t for t in (self._ticker, self._sweeper) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for group in self.groups.values():
            for m in group.members.values():
                _resolve(m.join_future, JoinResult(ErrorCode.NOT_COORDINATOR, member_id=m.member_id))
                _resolve(m.sync_future, SyncResult(ErrorCode.NOT_COORDINATOR))

    # --- loading ------------------------------------------------------------------
    async def _group(self, name: str, create: bool) -> Group | None:
        group = self.groups.get(name)
        if group is not None:
            return group
        async with self._load_lock:
            group = self.groups.get(name)
            if group is None:
                group = await self._load(name, create)
            return group

    async def _load(self, name: str, create: bool) -> Group | None:
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
        self.groups[name] = group
        return group

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
        if self._stopped:
            return JoinResult(ErrorCode.NOT_COORDINATOR, member_id=member_id)
        if not group_id:
            return JoinResult(ErrorCode.INVALID_GROUP_ID, member_id=member_id)
        if not self.min_session <= session_timeout_ms <= self.max_session:
            return JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, member_id=member_id)
        if rebalance_timeout_ms <= 0:
            rebalance_timeout_ms = session_timeout_ms
        group = await self._group(group_id, create=True)
        async with group.lock:
            if group.state == DEAD:
                return JoinResult(_gone(group), member_id=member_id)
            if not protocols or not group.supports(protocol_type, [n for n, _ in protocols]):
                return JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id)
            now = self.clock.monotonic_ms()
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
            _resolve(member.join_future, JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, member_id=member_id))
            member.join_future = asyncio.get_running_loop().create_future()
            future = member.join_future
            if group.state != PREPARING:
                self._prepare_rebalance(group, now)
            await self._maybe_complete_join(group)
        return await future

    async def _rejoin_static(self, group: Group, instance_id: str, client_id: str, client_host: str,
                             session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                             protocols: list[tuple[str, bytes]], now: int) -> JoinResult:
        """A restarted static member takes over its old identity, without a rebalance when that changes nothing.

        As in Kafka, "nothing" means the group is Stable, the member does not
        lead it, and the protocol the group would choose is still the one it
        uses; the old process, if still alive, is fenced from now on.
        """
        old_id = group.instances[instance_id]
        old = group.members.pop(old_id)
        _resolve(old.join_future, JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=old_id))
        _resolve(old.sync_future, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
        member = Member(new_id, instance_id, client_id, client_host, session_timeout_ms, rebalance_timeout_ms,
                        protocol_type, list(protocols), now, assignment=old.assignment)
        group.members[new_id] = member
        group.instances[instance_id] = new_id
        was_leader = group.leader == old_id
        if was_leader:
            group.leader = new_id
        if group.state == STABLE and not was_leader and group.select_protocol() == group.protocol:
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
                _resolve(m.sync_future, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
                m.sync_future = None
        was_empty = group.state == EMPTY
        group.state = PREPARING
        group.rebalance_started_ms = now
        group.join_not_before_ms = now + (self.initial_delay if was_empty else 0)

    async def _maybe_complete_join(self, group: Group, *, timed_out: bool = False) -> None:
        """Start the next generation once every member has rejoined (or the rebalance timed out)."""
        if group.state != PREPARING:
            return
        now = self.clock.monotonic_ms()
        if not timed_out and not (group.all_joined() and now >= group.join_not_before_ms):
            return
        # Dynamic members that did not rejoin are out; static ones keep their place
        # (their session timeout decides), so a bouncing static member moves nothing.
        for member_id in [m for m, member in group.members.items()
                          if member.join_future is None and not member.is_static]:
            self._remove(group, member_id)
        group.pending.clear()
        before = (group.generation, group.protocol_type, group.protocol, group.leader, group.empty_since_ms)
        group.generation += 1
        if group.members:
            group.protocol_type = next(iter(group.members.values())).protocol_type
            group.protocol = group.select_protocol()
            if group.leader not in group.members or group.members[group.leader].join_future is None:
                joined = [m for m, member in group.members.items() if member.join_future is not None]
                group.leader = joined[0] if joined else next(iter(group.members))
            group.empty_since_ms = None
        else:
            group.protocol = None
            group.leader = None
            group.empty_since_ms = self.clock.now_ms()
        try:
            await self._save(group)
        except TidelogError as exc:
            (group.generation, group.protocol_type, group.protocol, group.leader, group.empty_since_ms) = before
            log.warning("cannot store the next generation; retrying", extra={"group": group.name, "error": str(exc)})
            return
        if not group.members:
            group.state = EMPTY
            return
        group.state = COMPLETING
        listing = tuple((m.member_id, m.instance_id, m.metadata_for(group.protocol)) for m in group.members.values())
        for m in group.members.values():
            if m.join_future is None:
                continue  # an absent static member: assigned by the leader, answered if it returns
            m.last_seen_ms = now
            _resolve(m.join_future, JoinResult(ErrorCode.NONE, group.generation, group.protocol_type, group.protocol,
                                               group.leader, m.member_id,
                                               listing if m.member_id == group.leader else ()))
            m.join_future = None

    def _remove(self, group: Group, member_id: str) -> None:
        member = group.members.pop(member_id, None)
        if member is None:
            return
        if member.instance_id is not None and group.instances.get(member.instance_id) == member_id:
            del group.instances[member.instance_id]
        _resolve(member.join_future, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
        _resolve(member.sync_future, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))

    # --- sync ------------------------------------------------------------------------
    async def sync(self, *, group_id: str, generation: int, member_id: str, instance_id: str | None,
                   protocol_type: str | None, protocol: str | None,
                   assignments: list[tuple[str, bytes]]) -> SyncResult:
        if self._stopped:
            return SyncResult(ErrorCode.NOT_COORDINATOR)
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
            member.last_seen_ms = self.clock.monotonic_ms()
            if group.state == PREPARING:
                return SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)
            if group.state == STABLE:
                return SyncResult(ErrorCode.NONE, member.assignment, group.protocol_type, group.protocol)
            _resolve(member.sync_future, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
            member.sync_future = asyncio.get_running_loop().create_future()
            future = member.sync_future
            if member_id == group.leader:
                given = dict(assignments)
                for m in group.members.values():
                    m.assignment = given.get(m.member_id, b"")
                group.state = STABLE
                for m in group.members.values():
                    _resolve(m.sync_future, SyncResult(ErrorCode.NONE, m.assignment, group.protocol_type,
                                                       group.protocol))
                    m.sync_future = None
        return await future

    def _validate_member(self, group: Group, member: Member | None, member_id: str, instance_id: str | None,
                         generation: int) -> int:
        if group.state == DEAD:
            return _gone(group)
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
        if self._stopped:
            return ErrorCode.NOT_COORDINATOR
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        async with group.lock:
            member = group.members.get(member_id)
            error = self._validate_member(group, member, member_id, instance_id, generation)
            if error:
                return error
            member.last_seen_ms = self.clock.monotonic_ms()
            if group.state == PREPARING:
                return ErrorCode.REBALANCE_IN_PROGRESS
            return ErrorCode.NONE

    async def leave(self, *, group_id: str, members: list[tuple[str, str | None]]) -> tuple[int, list[int]]:
        if self._stopped:
            return ErrorCode.NOT_COORDINATOR, [ErrorCode.NOT_COORDINATOR] * len(members)
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
                if member_id in group.pending:
                    # It was handed a member id but never joined: stop waiting for it.
                    del group.pending[member_id]
                    errors.append(ErrorCode.NONE)
                    continue
                if member_id not in group.members:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                self._remove(group, member_id)
                errors.append(ErrorCode.NONE)
            if any(e == ErrorCode.NONE for e in errors):
                await self._membership_changed(group)
        return ErrorCode.NONE, errors

    async def _membership_changed(self, group: Group) -> None:
        now = self.clock.monotonic_ms()
        if group.state in (STABLE, COMPLETING):
            if group.members:
                self._prepare_rebalance(group, now)
            else:
                group.state = PREPARING
        if group.state == PREPARING:
            await self._maybe_complete_join(group, timed_out=not group.members or group.all_joined())

    # --- background maintenance -----------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self._tick_all()
            if self._sweep_due() and (self._sweeper is None or self._sweeper.done()):
                # Its own task: a long sweep over many stored groups must not hold up session expiry.
                self._sweeper = asyncio.create_task(self._sweep(), name="group-offset-expiry")

    async def run_maintenance(self) -> None:
        """One pass of what the background tasks do: expire sessions, finish rebalances and, when due,
        expire offsets.  Public so tests driving a manual clock can run it without the ticker."""
        await self._tick_all()
        if self._sweep_due():
            await self._sweep()

    async def _tick_all(self) -> None:
        for group in list(self.groups.values()):
            try:
                await self._tick(group)
            except Exception:  # noqa: BLE001 - one group's trouble must not stop the rest
                log.exception("group maintenance failed", extra={"group": group.name})

    def _sweep_due(self) -> bool:
        now = self.clock.monotonic_ms()
        if self._next_sweep_ms is not None and now < self._next_sweep_ms:
            return False
        self._next_sweep_ms = now + self.retention_check_interval_ms
        return True

    async def _sweep(self) -> None:
        try:
            await self.expire_offsets()
        except TidelogError as exc:
            log.warning("offset expiry failed; retrying at the next sweep", extra={"error": str(exc)})

    async def _tick(self, group: Group) -> None:
        now = self.clock.monotonic_ms()
        async with group.lock:
            for member_id, deadline in list(group.pending.items()):
                if now > deadline:
                    del group.pending[member_id]
            if group.state in (STABLE, COMPLETING, PREPARING):
                # Members awaiting a join or sync answer are alive by definition.
                expired = [m.member_id for m in group.members.values()
                           if m.join_future is None and m.sync_future is None
                           and now - m.last_seen_ms > m.session_timeout_ms]
                if expired:
                    for member_id in expired:
                        log.info("member session expired", extra={"group": group.name, "member": member_id})
                        self._remove(group, member_id)
                    await self._membership_changed(group)
            if group.state == PREPARING:
                await self._maybe_complete_join(group, timed_out=now >= group.rebalance_deadline_ms()
                                                or not group.members)

    # --- offsets -----------------------------------------------------------------------------------
    async def commit_offsets(self, *, group_id: str, generation: int, member_id: str, instance_id: str | None,
                             offsets: list[CommittedOffset]) -> int:
        """Returns one error code for the whole commit (per-partition validation is the caller's)."""
        if self._stopped:
            return ErrorCode.NOT_COORDINATOR
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = await self._group(group_id, create=True)
        async with group.lock:
            if group.state == DEAD:
                return _gone(group)
            outsider = generation < 0 and not member_id and instance_id is None
            if outsider:
                # Kafka lets a consumer outside any group commit only while the group is empty.
                if group.members:
                    return ErrorCode.UNKNOWN_MEMBER_ID
            else:
                member = group.members.get(member_id)
                error = self._validate_member(group, member, member_id, instance_id, generation)
                if error:
                    return error
                if group.state == COMPLETING:
                    return ErrorCode.REBALANCE_IN_PROGRESS
                member.last_seen_ms = self.clock.monotonic_ms()
            try:
                await self.store.commit(group_id, -1 if outsider else generation, offsets)
            except GenerationFenced:
                return ErrorCode.ILLEGAL_GENERATION
            if outsider:
                self._records[group_id] = await self.store.load(group_id)
            return ErrorCode.NONE

    async def fetch_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
        """The group's committed offsets, never including one that has expired (see the module docstring)."""
        group = await self._group(group_id, create=False)
        committed = await self.store.offsets(group_id)
        if group is None:
            return {(o.topic, o.partition): o for o in committed}
        expired = {(o.topic, o.partition) for o in self._expired(group, committed)}
        return {(o.topic, o.partition): o for o in committed if (o.topic, o.partition) not in expired}

    def _expired(self, group: Group, offsets: list[CommittedOffset]) -> list[CommittedOffset]:
        return group.expired_offsets(offsets, self.clock.now_ms(), self.offsets_retention_ms)

    async def expire_offsets(self) -> None:
        """Delete expired offsets of every stored group; remove Empty groups left with no offsets.

        Groups loaded here are judged by their live state, under their lock.
        Any other group is judged from its stored record without loading it
        (loading would move its generation on, fencing the members of whichever
        broker coordinates it): only a group stored as having no members can
        have expired offsets then, and every delete is conditional, so a
        coordinator that is busy with it elsewhere loses nothing.
        """
        for name in sorted(set(await self.store.list_names()) | set(self.groups)):
            group = self.groups.get(name)
            if group is not None:
                async with group.lock:
                    if group.state != DEAD:
                        await self._expire_group(group)
                continue
            record = await self.store.load(name)
            if name not in self.groups and (record is None or record.members == 0):
                stored = Group(name, state=EMPTY, generation=record.generation if record else 0,
                               protocol_type=record.protocol_type if record else None,
                               empty_since_ms=record.empty_since_ms if record else None)
                await self._expire_group(stored, record)

    async def _expire_group(self, group: Group, record: GroupRecord | None = None) -> None:
        committed = await self.store.offsets(group.name)
        expired = self._expired(group, committed)
        if expired:
            deleted = await self.store.expire_offsets(group.name, expired)
            log.info("expired committed offsets", extra={"group": group.name, "count": deleted})
            if deleted < len(expired):
                return
        if group.state == EMPTY and not group.members and not group.pending and len(committed) == len(expired):
            loaded = group.name in self.groups
            try:
                await self.store.delete_group(group.name, self._records.get(group.name) if loaded else record)
            except Conflict:
                return  # the group changed meanwhile: it is in use again
            if loaded:
                self._forget(group)
            log.info("removed empty group", extra={"group": group.name})

    def _forget(self, group: Group, *, moved: bool = False) -> None:
        group.state = DEAD
        group.moved = moved
        if self.groups.get(group.name) is group:
            del self.groups[group.name]
            self._records.pop(group.name, None)

    async def forget(self, should_forget: Callable[[str], bool]) -> None:
        """Drop the in-memory state of groups another broker now coordinates (or all of them, after
        our session was fenced).  Waiting members are told NOT_COORDINATOR and find the new
        coordinator, which reloads the group from the store and moves its generation on."""
        for name in [n for n in self.groups if should_forget(n)]:
            group = self.groups[name]
            async with group.lock:
                self._forget(group, moved=True)
                for m in group.members.values():
                    _resolve(m.join_future, JoinResult(ErrorCode.NOT_COORDINATOR, member_id=m.member_id))
                    _resolve(m.sync_future, SyncResult(ErrorCode.NOT_COORDINATOR))

    # --- admin ----------------------------------------------------------------------------------------
    async def list_groups(self, owned: Callable[[str], bool] = lambda name: True) -> list[Group]:
        """Groups this broker coordinates (``owned``), loading those it has not seen yet."""
        names = set(await self.store.list_names()) | set(self.groups)
        out = []
        for name in sorted(n for n in names if owned(n)):
            group = await self._group(name, create=False)
            if group is not None and group.state != DEAD:
                out.append(group)
        return out

    async def describe(self, group_id: str) -> Group | None:
        return await self._group(group_id, create=False)

    async def delete_group(self, group_id: str) -> int:
        if self._stopped:
            return ErrorCode.NOT_COORDINATOR
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND
        async with group.lock:
            if group.state == DEAD:
                return ErrorCode.NOT_COORDINATOR if group.moved else ErrorCode.GROUP_ID_NOT_FOUND
            if group.members:
                return ErrorCode.NON_EMPTY_GROUP
            await self.store.delete_group(group_id, await self.store.load(group_id))
            self._forget(group)
        return ErrorCode.NONE

    async def delete_offsets(self, group_id: str,
                             partitions: list[tuple[str, int]]) -> tuple[int, dict[tuple[str, int], int]]:
        """OffsetDelete, with Kafka's rules: an Empty group loses any offsets; a consumer group with
        members keeps those of topics it subscribes to (GROUP_SUBSCRIBED_TO_TOPIC); other
        groups with members refuse (NON_EMPTY_GROUP)."""
        if self._stopped:
            return ErrorCode.NOT_COORDINATOR, {}
        group = await self._group(group_id, create=False)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        async with group.lock:
            if group.state == DEAD:
                return (ErrorCode.NOT_COORDINATOR if group.moved else ErrorCode.GROUP_ID_NOT_FOUND), {}
            if not group.members:
                subscribed: set[str] = set()
            elif group.protocol_type == CONSUMER_PROTOCOL:
                known = group.subscribed_topics()
                subscribed = {t for t, _ in partitions} if known is None else known
            else:
                return ErrorCode.NON_EMPTY_GROUP, {}
            errors = {tp: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC if tp[0] in subscribed else ErrorCode.NONE
                      for tp in partitions}
            deletable = [tp for tp, e in errors.items() if e == ErrorCode.NONE]
            if deletable:
                await self.store.delete_offsets(group_id, deletable)
        return ErrorCode.NONE, errors


def _gone(group: Group) -> int:
    """The answer for a request that reached a Dead group: look again (moved) or retry (deleted)."""
    return ErrorCode.NOT_COORDINATOR if group.moved else ErrorCode.COORDINATOR_NOT_AVAILABLE


def _resolve(future: asyncio.Future | None, result: object) -> None:
    if future is not None and not future.done():
        future.set_result(result)
