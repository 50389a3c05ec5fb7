"""Produce: validate per partition, buffer, answer after the flush commits."""

from __future__ import annotations

import asyncio

from .. import wire
from ..context import BrokerContext
from ..errors import ErrorCode
from ..logs import ProduceError
from ..metrics import METRICS

PRODUCE = 0


async def produce(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    acks = body.acks
    R = wire.response_class(PRODUCE, request.api_version)
    TR = R.TopicProduceResponse
    PR = TR.PartitionProduceResponse
    if body.transactional_id is not None:
        code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif acks not in (0, 1, -1):
        code = ErrorCode.INVALID_REQUIRED_ACKS
    else:
        code = ErrorCode.NONE

    async def one(name: str, partition: int, records: bytes | None):
        if code != ErrorCode.NONE:
            return PR(index=partition, error_code=code, base_offset=-1, log_append_time_ms=-1, log_start_offset=-1)
        try:
            if records:
                METRICS.bytes_in.inc(len(records))
            appended = await ctx.logs.append(name, partition, records, acks)
        except ProduceError as exc:
            return PR(index=partition, error_code=exc.code, base_offset=-1, log_append_time_ms=-1,
                      log_start_offset=-1, error_message=str(exc) if request.api_version >= 8 else None)
        return PR(index=partition, error_code=0, base_offset=appended.base_offset, log_append_time_ms=-1,
                  log_start_offset=appended.log_start_offset)

    names = [t.name for t in body.topic_data]
    tasks = [[asyncio.ensure_future(one(t.name, p.index, p.records)) for p in t.partition_data]
             for t in body.topic_data]
    results = [await asyncio.gather(*row) for row in tasks]
    if acks == 0:
        return None
    return R(responses=[TR(name=n, partition_responses=list(rs)) for n, rs in zip(names, results)],
             throttle_time_ms=0)


HANDLERS = {PRODUCE: produce}
