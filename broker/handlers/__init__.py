"""One module per API family; each handler turns a decoded request into a response body."""

from __future__ import annotations

from functools import partial

from ..context import BrokerContext
from . import admin, cluster, fetch, produce


def build_handlers(ctx: BrokerContext) -> dict:
    table = {}
    for module in (cluster, produce, fetch, admin):
        for api_key, fn in module.HANDLERS.items():
            table[api_key] = partial(fn, ctx)
    if ctx.groups is not None:
        from . import groups
        for api_key, fn in groups.HANDLERS.items():
            table[api_key] = partial(fn, ctx)
    return table
