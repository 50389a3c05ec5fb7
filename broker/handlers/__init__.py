"""One module per API family; each handler turns a decoded request into a response body."""

from __future__ import annotations

from functools import partial

from ..context import BrokerContext
from ..errors import ErrorCode
from ..server import RequestRefused
from . import admin, cluster, fetch, produce


def build_handlers(ctx: BrokerContext) -> dict:
    table = {}
    for module in (cluster, produce, fetch, admin):
        for api_key, fn in module.HANDLERS.items():
            table[api_key] = partial(fn, ctx)
    if ctx.groups is not None:
        from . import groups
        for api_key, fn in groups.HANDLERS.items():
            table[api_key] = partial(_coordinated, fn, ctx) if api_key in _GROUP_SCOPED else partial(fn, ctx)
    return table


# APIs addressed to one group's coordinator; the rest (FindCoordinator,
# ListGroups, DescribeGroups, DeleteGroups, batched OffsetFetch) resolve per group.
_GROUP_SCOPED = {8, 11, 12, 13, 14, 47}


async def _coordinated(fn, ctx: BrokerContext, request):
    group_id = getattr(request.body, "group_id", None)
    if group_id and not ctx.is_coordinator(group_id):
        raise RequestRefused(ErrorCode.NOT_COORDINATOR)
    return await fn(ctx, request)
