"""The group API handlers' own rules, called directly with decoded requests (no sockets).

Two things live in the handlers rather than the coordinator: per-group
coordinator ownership for the APIs that name several groups (a broker must
never load, and so never fence, a group another broker coordinates), and
turning a group-store outage into COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tidelog.broker import wire
from tidelog.broker.errors import ErrorCode
from tidelog.broker.groups.coordinator import GroupCoordinator
from tidelog.broker.handlers import groups as handlers
from tidelog.broker.server import RequestRefused
from tidelog.storage.adapters.sqlite import SqliteMetaStore
from tidelog.storage.clock import ManualClock
from tidelog.storage.errors import Unavailable
from tidelog.storage.groups import CommittedOffset, GroupRecord, GroupStore

pytestmark = pytest.mark.timeout(20)

NEAR, FAR = "near", "far-away"  # this broker coordinates NEAR; another broker coordinates FAR


class OutageStore(GroupStore):
    def __init__(self, meta) -> None:
        super().__init__(meta)
        self.down = False

    async def offsets(self, name):
        if self.down:
            raise Unavailable("store is down")
        return await super().offsets(name)


@pytest.fixture
async def ctx(tmp_path: Path):
    meta = await SqliteMetaStore.open(tmp_path / "meta.db")
    await meta.ensure(create=True)
    store = OutageStore(meta)
    clock = ManualClock()
    coord = GroupCoordinator(store, clock)
    await store.commit(NEAR, -1, [CommittedOffset("t", 0, 5, None, -1, clock.now_ms())])
    await store.commit(FAR, -1, [CommittedOffset("t", 0, 9, None, -1, clock.now_ms())])
    far = await store.load(FAR)
    await store.save(GroupRecord(FAR, 5, "consumer", "range", "m-1", 2, None, 0), far)
    yield SimpleNamespace(groups=coord, clock=clock, store=store, is_coordinator=lambda name: name != FAR)
    await coord.stop()
    await meta.close()


async def call(ctx, api: int, version: int, **fields):
    body = wire.request_class(api, version)(**fields)
    request = wire.DecodedRequest(api, version, 1, "test", wire.request_header_version(api, version), body)
    return await handlers.HANDLERS[api](ctx, request)


async def assert_far_group_untouched(ctx) -> None:
    far = await ctx.store.load(FAR)
    assert (far.generation, far.members, far.version) == (5, 2, 2)
    assert FAR not in ctx.groups.groups


async def test_list_groups_shows_only_the_groups_this_broker_coordinates(ctx):
    response = await call(ctx, handlers.LIST_GROUPS, 4, states_filter=[])
    assert [(g.group_id, g.group_state, g.protocol_type) for g in response.groups] == [(NEAR, "Empty", "")]
    await assert_far_group_untouched(ctx)


async def test_state_filter_ignores_case(ctx):
    assert [g.group_id for g in (await call(ctx, handlers.LIST_GROUPS, 4, states_filter=["EMPTY"])).groups] == [NEAR]
    assert (await call(ctx, handlers.LIST_GROUPS, 4, states_filter=["Stable"])).groups == []


async def test_describe_delete_and_fetch_refuse_a_group_coordinated_elsewhere(ctx):
    described = await call(ctx, handlers.DESCRIBE_GROUPS, 5, groups=[NEAR, FAR], include_authorized_operations=False)
    assert [(g.group_id, g.error_code) for g in described.groups] == [(NEAR, 0), (FAR, ErrorCode.NOT_COORDINATOR)]
    deleted = await call(ctx, handlers.DELETE_GROUPS, 2, groups_names=[FAR])
    assert [(r.group_id, r.error_code) for r in deleted.results] == [(FAR, ErrorCode.NOT_COORDINATOR)]
    F = wire.request_class(handlers.OFFSET_FETCH, 8)
    fetched = await call(ctx, handlers.OFFSET_FETCH, 8, require_stable=False, groups=[
        F.OffsetFetchRequestGroup(group_id=g, topics=None) for g in (NEAR, FAR)])
    assert [(g.group_id, g.error_code) for g in fetched.groups] == [(NEAR, 0), (FAR, ErrorCode.NOT_COORDINATOR)]
    assert fetched.groups[0].topics[0].partitions[0].committed_offset == 5
    with pytest.raises(RequestRefused) as refused:
        await call(ctx, handlers.OFFSET_FETCH, 7, group_id=FAR, topics=None, require_stable=False)
    assert refused.value.kafka_code == ErrorCode.NOT_COORDINATOR
    await assert_far_group_untouched(ctx)


async def test_store_outage_answers_coordinator_not_available(ctx):
    ctx.store.down = True
    with pytest.raises(RequestRefused) as refused:
        await call(ctx, handlers.OFFSET_FETCH, 7, group_id=NEAR, topics=None, require_stable=False)
    assert refused.value.kafka_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
