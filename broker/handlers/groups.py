"""Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.

APIs addressed to one group reach these handlers only on that group's
coordinator (`handlers.build_handlers` refuses the rest with NOT_COORDINATOR).
The ones that name several groups (ListGroups, DescribeGroups, DeleteGroups,
OffsetFetch) check each group here and answer NOT_COORDINATOR for the groups
another broker coordinates: loading a group moves its stored generation on,
so a broker must never load a group it does not coordinate.  A group-store
outage answers COORDINATOR_NOT_AVAILABLE, which clients meet by looking up
the coordinator again and retrying.
"""

from __future__ import annotations

import functools
import logging

from tidelog.storage.errors import Unavailable
from tidelog.storage.groups import CommittedOffset

from .. import wire
from ..context import BrokerContext
from ..server import CLIENT_HOST, RequestRefused
from ..errors import ErrorCode
from ..groups.coordinator import MAX_METADATA
from ..groups.state import STABLE

log = logging.getLogger("tidelog.groups")

(OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP,
 DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS, OFFSET_DELETE) = 8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47
GROUP_KEY = 0


async def find_coordinator(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    v = request.api_version
    R = wire.response_class(FIND_COORDINATOR, v)
    key_type = getattr(body, "key_type", GROUP_KEY) or GROUP_KEY
    keys = body.coordinator_keys if v >= 4 else [body.key]

    def locate(key: str) -> tuple[int, str, int, int, str | None]:
        if key_type != GROUP_KEY:
            return -1, "", -1, ErrorCode.COORDINATOR_NOT_AVAILABLE, "only consumer-group coordinators are served"
        node = ctx.coordinator_for(key)
        if node is None:
            return -1, "", -1, ErrorCode.COORDINATOR_NOT_AVAILABLE, "no live broker"
        return node.node_id, node.host, node.port, ErrorCode.NONE, None

    if v >= 4:
        out = []
        for key in keys:
            node_id, host, port, error, message = locate(key)
            out.append(R.Coordinator(key=key, node_id=node_id, host=host, port=port, error_code=error,
                                     error_message=message))
        return R(throttle_time_ms=0, coordinators=out)
    node_id, host, port, error, message = locate(keys[0])
    return R(throttle_time_ms=0, error_code=error, error_message=message, node_id=node_id, host=host, port=port)


def _client_host(request: wire.DecodedRequest) -> str:
    return CLIENT_HOST.get()


async def join_group(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    v = request.api_version
    R = wire.response_class(JOIN_GROUP, v)
    result = await ctx.groups.join(
        group_id=b.group_id, member_id=b.member_id or "", instance_id=getattr(b, "group_instance_id", None),
        client_id=request.client_id or "", client_host=_client_host(request),
        session_timeout_ms=b.session_timeout_ms,
        rebalance_timeout_ms=getattr(b, "rebalance_timeout_ms", b.session_timeout_ms) if v >= 1 else b.session_timeout_ms,
        protocol_type=b.protocol_type, protocols=[(p.name, bytes(p.metadata)) for p in b.protocols],
        require_known_member=v >= 4)
    members = [R.JoinGroupResponseMember(member_id=m, group_instance_id=i, metadata=md) for m, i, md in result.members]
    return R(throttle_time_ms=0, error_code=result.error, generation_id=result.generation,
             # ProtocolName only became nullable in v7; before that an error answer carries "" as Kafka's does.
             protocol_type=result.protocol_type, protocol_name=result.protocol if v >= 7 else result.protocol or "",
             leader=result.leader, skip_assignment=False, member_id=result.member_id, members=members)


async def sync_group(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    v = request.api_version
    R = wire.response_class(SYNC_GROUP, v)
    result = await ctx.groups.sync(
        group_id=b.group_id, generation=b.generation_id, member_id=b.member_id,
        instance_id=getattr(b, "group_instance_id", None),
        protocol_type=getattr(b, "protocol_type", None) if v >= 5 else None,
        protocol=getattr(b, "protocol_name", None) if v >= 5 else None,
        assignments=[(a.member_id, bytes(a.assignment)) for a in b.assignments])
    return R(throttle_time_ms=0, error_code=result.error, protocol_type=result.protocol_type,
             protocol_name=result.protocol, assignment=result.assignment)


async def heartbeat(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    R = wire.response_class(HEARTBEAT, request.api_version)
    error = await ctx.groups.heartbeat(group_id=b.group_id, generation=b.generation_id, member_id=b.member_id,
                                       instance_id=getattr(b, "group_instance_id", None))
    return R(throttle_time_ms=0, error_code=error)


async def leave_group(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    v = request.api_version
    R = wire.response_class(LEAVE_GROUP, v)
    if v >= 3:
        members = [(m.member_id, m.group_instance_id) for m in b.members]
    else:
        members = [(b.member_id, None)]
    error, errors = await ctx.groups.leave(group_id=b.group_id, members=members)
    if v < 3:
        return R(throttle_time_ms=0, error_code=errors[0] if errors else error)
    out = [R.MemberResponse(member_id=m, group_instance_id=i, error_code=e) for (m, i), e in zip(members, errors)]
    return R(throttle_time_ms=0, error_code=error, members=out)


async def offset_commit(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    v = request.api_version
    R = wire.response_class(OFFSET_COMMIT, v)
    TR = R.OffsetCommitResponseTopic
    PR = TR.OffsetCommitResponsePartition
    now = ctx.clock.now_ms()
    errors: dict[tuple[str, int], int] = {}
    valid: list[CommittedOffset] = []
    for t in b.topics:
        topic = await ctx.catalog.get(t.name)
        for p in t.partitions:
            key = (t.name, p.partition_index)
            if topic is None or not 0 <= p.partition_index < topic.partitions:
                errors[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif p.committed_metadata is not None and len(p.committed_metadata) > MAX_METADATA:
                errors[key] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                epoch = getattr(p, "committed_leader_epoch", -1) if v >= 6 else -1
                valid.append(CommittedOffset(t.name, p.partition_index, p.committed_offset, p.committed_metadata,
                                             -1 if epoch is None else epoch, now))
    if valid:
        code = await ctx.groups.commit_offsets(
            group_id=b.group_id, generation=b.generation_id_or_member_epoch, member_id=b.member_id or "",
            instance_id=getattr(b, "group_instance_id", None), offsets=valid)
        for o in valid:
            errors[(o.topic, o.partition)] = code
    elif not b.group_id:
        for key in errors:
            errors[key] = errors[key] or ErrorCode.INVALID_GROUP_ID
    topics = [TR(name=t.name, partitions=[PR(partition_index=p.partition_index,
                                              error_code=errors[(t.name, p.partition_index)])
                                           for p in t.partitions]) for t in b.topics]
    return R(throttle_time_ms=0, topics=topics)


async def _offsets_for(ctx: BrokerContext, group_id: str, topics) -> list[tuple[str, list[tuple[int, int, int, str | None, int]]]]:
    committed = await ctx.groups.fetch_offsets(group_id)
    out = []
    if topics is None:
        by_topic: dict[str, list] = {}
        for (topic, partition), o in sorted(committed.items()):
            by_topic.setdefault(topic, []).append((partition, o.offset, o.leader_epoch, o.metadata, 0))
        return list(by_topic.items())
    for t in topics:
        rows = []
        for partition in t.partition_indexes:
            o = committed.get((t.name, partition))
            if o is None:
                rows.append((partition, -1, -1, "", 0))
            else:
                rows.append((partition, o.offset, o.leader_epoch, o.metadata, 0))
        out.append((t.name, rows))
    return out


async def offset_fetch(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    v = request.api_version
    R = wire.response_class(OFFSET_FETCH, v)
    if v >= 8:
        G = R.OffsetFetchResponseGroup
        T = G.OffsetFetchResponseTopics
        P = T.OffsetFetchResponsePartitions
        groups = []
        for g in b.groups:
            if not ctx.is_coordinator(g.group_id):
                groups.append(G(group_id=g.group_id, error_code=ErrorCode.NOT_COORDINATOR, topics=[]))
                continue
            rows = await _offsets_for(ctx, g.group_id, g.topics)
            groups.append(G(group_id=g.group_id, error_code=0, topics=[
                T(name=name, partitions=[P(partition_index=p, committed_offset=o, committed_leader_epoch=e,
                                           metadata=m, error_code=err) for p, o, e, m, err in parts])
                for name, parts in rows]))
        return R(throttle_time_ms=0, groups=groups)
    if not ctx.is_coordinator(b.group_id):
        raise RequestRefused(ErrorCode.NOT_COORDINATOR)
    T = R.OffsetFetchResponseTopic
    P = T.OffsetFetchResponsePartition
    rows = await _offsets_for(ctx, b.group_id, b.topics)
    return R(throttle_time_ms=0, error_code=0, topics=[
        T(name=name, partitions=[P(partition_index=p, committed_offset=o, committed_leader_epoch=e, metadata=m,
                                   error_code=err) for p, o, e, m, err in parts])
        for name, parts in rows])


async def list_groups(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    R = wire.response_class(LIST_GROUPS, request.api_version)
    wanted = {state.lower() for state in getattr(b, "states_filter", None) or []}  # Kafka ignores case here
    out = []
    # Each broker lists the groups it coordinates; clients ask every broker.
    for g in await ctx.groups.list_groups(ctx.is_coordinator):
        if wanted and g.state.lower() not in wanted:
            continue
        out.append(R.ListedGroup(group_id=g.name, protocol_type=g.protocol_type or "", group_state=g.state))
    return R(throttle_time_ms=0, error_code=0, groups=out)


async def describe_groups(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    R = wire.response_class(DESCRIBE_GROUPS, request.api_version)
    D = R.DescribedGroup
    M = D.DescribedGroupMember
    out = []
    for name in b.groups:
        if not ctx.is_coordinator(name):
            out.append(D(error_code=ErrorCode.NOT_COORDINATOR, group_id=name, group_state="", protocol_type="",
                         protocol_data="", members=[]))
            continue
        g = await ctx.groups.describe(name)
        if g is None:
            out.append(D(error_code=0, group_id=name, group_state="Dead", protocol_type="", protocol_data="",
                         members=[]))
            continue
        # As in Kafka, the protocol, subscriptions and assignments are only shown once they are
        # settled (Stable); mid-rebalance they belong to a generation that is going away.
        stable = g.state == STABLE
        members = [M(member_id=m.member_id, group_instance_id=m.instance_id, client_id=m.client_id,
                     client_host=m.client_host, member_metadata=m.metadata_for(g.protocol) if stable else b"",
                     member_assignment=m.assignment if stable else b"") for m in g.members.values()]
        out.append(D(error_code=0, group_id=name, group_state=g.state, protocol_type=g.protocol_type or "",
                     protocol_data=(g.protocol or "") if stable else "", members=members))
    return R(throttle_time_ms=0, groups=out)


async def delete_groups(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    R = wire.response_class(DELETE_GROUPS, request.api_version)
    results = [R.DeletableGroupResult(group_id=name, error_code=await ctx.groups.delete_group(name)
                                      if ctx.is_coordinator(name) else ErrorCode.NOT_COORDINATOR)
               for name in b.groups_names]
    return R(throttle_time_ms=0, results=results)


async def offset_delete(ctx: BrokerContext, request: wire.DecodedRequest):
    b = request.body
    R = wire.response_class(OFFSET_DELETE, request.api_version)
    TR = R.OffsetDeleteResponseTopic
    PR = TR.OffsetDeleteResponsePartition
    wanted = [(t.name, p.partition_index) for t in b.topics for p in t.partitions]
    error, errors = await ctx.groups.delete_offsets(b.group_id, wanted)
    topics = [TR(name=t.name, partitions=[PR(partition_index=p.partition_index,
                                              error_code=errors.get((t.name, p.partition_index), error))
                                           for p in t.partitions]) for t in b.topics]
    return R(error_code=error, throttle_time_ms=0, topics=topics)


def _store_outage_refused(handler):
    """A group-store outage answers COORDINATOR_NOT_AVAILABLE, which every client meets by
    finding the coordinator again and retrying, rather than UNKNOWN_SERVER_ERROR."""

    @functools.wraps(handler)
    async def guarded(ctx: BrokerContext, request: wire.DecodedRequest):
        try:
            return await handler(ctx, request)
        except Unavailable as exc:
            log.warning("group store unavailable", extra={"api": handler.__name__, "error": str(exc)})
            raise RequestRefused(ErrorCode.COORDINATOR_NOT_AVAILABLE) from exc

    return guarded


HANDLERS = {api: _store_outage_refused(fn) for api, fn in {
    FIND_COORDINATOR: find_coordinator, JOIN_GROUP: join_group, SYNC_GROUP: sync_group, HEARTBEAT: heartbeat,
    LEAVE_GROUP: leave_group, OFFSET_COMMIT: offset_commit, OFFSET_FETCH: offset_fetch, LIST_GROUPS: list_groups,
    DESCRIBE_GROUPS: describe_groups, DELETE_GROUPS: delete_groups, OFFSET_DELETE: offset_delete}.items()}
