"""Fetch (with long-poll and byte limits) and ListOffsets."""

from __future__ import annotations

import uuid

import asyncio

from .. import wire
from ..context import BrokerContext
from ..errors import ErrorCode

FETCH, LIST_OFFSETS = 1, 2


async def fetch(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    v = request.api_version
    R = wire.response_class(FETCH, v)
    TR = R.FetchableTopicResponse
    PD = TR.PartitionData
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0, body.max_wait_ms) / 1000
    max_bytes = body.max_bytes if v >= 3 and body.max_bytes > 0 else 2**31 - 1
    by_id = {}
    if v >= 13:
        by_id = await _names_by_id(ctx, [t.topic_id for t in body.topics])

    while True:
        remaining = max_bytes
        total = 0
        errors = False
        topics = []
        for t in body.topics:
            name = by_id.get(t.topic_id) if v >= 13 else t.topic
            parts = []
            for p in t.partitions:
                if name is None:
                    parts.append(PD(partition_index=p.partition, error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                                    high_watermark=-1, last_stable_offset=-1, log_start_offset=-1,
                                    aborted_transactions=None, preferred_read_replica=-1, records=b""))
                    errors = True
                    continue
                limit = min(p.partition_max_bytes, remaining)
                result = await ctx.logs.read(name, p.partition, p.fetch_offset, limit, first_batch_always=total == 0)
                records = result.records
                remaining -= len(records)
                total += len(records)
                errors = errors or result.error != ErrorCode.NONE
                parts.append(PD(partition_index=p.partition, error_code=result.error,
                                high_watermark=result.high_watermark, last_stable_offset=result.high_watermark,
                                log_start_offset=result.log_start_offset, aborted_transactions=None,
                                preferred_read_replica=-1, records=records))
            topics.append(TR(topic=t.topic if v < 13 else None, topic_id=t.topic_id if v >= 13 else None,
                             partitions=parts))
        left = deadline - loop.time()
        if total >= max(1, body.min_bytes) or errors or left <= 0:
            break
        await ctx.logs.wait_for_data(left)
    return R(throttle_time_ms=0, error_code=0, session_id=0, responses=topics)


async def _names_by_id(ctx: BrokerContext, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Topic names for Fetch v13+ topic ids.

    Tailing librdkafka consumers send a Fetch every few hundred ms, so the
    topics this broker already knows answer; the catalog (one Query) is read
    only for an id it has not seen.
    """
    known = {uuid.UUID(t.topic_id): t.name for t in ctx.logs.topics.values()}
    if all(i in known for i in ids):
        return known
    return {uuid.UUID(t.topic_id): t.name for t in await ctx.catalog.list()}


async def list_offsets(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    v = request.api_version
    R = wire.response_class(LIST_OFFSETS, v)
    TR = R.ListOffsetsTopicResponse
    PR = TR.ListOffsetsPartitionResponse
    topics = []
    for t in body.topics:
        parts = []
        for p in t.partitions:
            error, offset, timestamp, epoch = await ctx.logs.offset_for_time(t.name, p.partition_index, p.timestamp)
            parts.append(PR(partition_index=p.partition_index, error_code=error, timestamp=timestamp, offset=offset,
                            leader_epoch=epoch, old_style_offsets=[offset] if offset >= 0 else []))
        topics.append(TR(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


HANDLERS = {FETCH: fetch, LIST_OFFSETS: list_offsets}
