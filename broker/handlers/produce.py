"""Produce: validate and buffer every partition, then answer once their flush commits."""

from __future__ import annotations

import asyncio

from .. import wire
from ..context import BrokerContext
from ..errors import ErrorCode
from ..logs import Appended, ProduceError
from ..metrics import METRICS

PRODUCE = 0


async def produce(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    acks = body.acks
    R = wire.response_class(PRODUCE, request.api_version)
    TR = R.TopicProduceResponse
    PR = TR.PartitionProduceResponse
    if body.transactional_id is not None:
        refusal = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif acks not in (0, 1, -1):
        refusal = ErrorCode.INVALID_REQUIRED_ACKS
    else:
        refusal = ErrorCode.NONE

    def failed(partition: int, code: int, message: str | None = None):
        return PR(index=partition, error_code=code, base_offset=-1, log_append_time_ms=-1, log_start_offset=-1,
                  error_message=message if request.api_version >= 8 else None)

    # Every partition is buffered before the request waits, with no task per
    # partition: one wait covers them all, as they share the next flush.
    outcomes = []
    waits = []
    for t in body.topic_data:
        topic = await ctx.logs.topic(t.name) if refusal == ErrorCode.NONE else None
        row = []
        for p in t.partition_data:
            if refusal != ErrorCode.NONE:
                row.append(failed(p.index, refusal))
                continue
            if p.records:
                METRICS.bytes_in.inc(len(p.records))
            try:
                outcome = ctx.logs.enqueue(topic, t.name, p.index, p.records, acks)
            except ProduceError as exc:
                row.append(failed(p.index, exc.code, str(exc)))
                continue
            if not isinstance(outcome, Appended):
                waits.append(outcome.future)
            row.append((p.index, outcome))
        outcomes.append((t.name, row))
    if waits:
        await asyncio.wait(waits)
    if acks == 0:
        return None

    def answer(item):
        if not isinstance(item, tuple):
            return item
        partition, outcome = item
        if isinstance(outcome, Appended):
            return PR(index=partition, error_code=0, base_offset=outcome.base_offset, log_append_time_ms=-1,
                      log_start_offset=outcome.log_start_offset)
        error = outcome.future.exception()
        if error is not None:
            if not isinstance(error, ProduceError):
                raise error
            return failed(partition, error.code, str(error))
        return PR(index=partition, error_code=0, base_offset=outcome.future.result(), log_append_time_ms=-1,
                  log_start_offset=outcome.state.log_start_offset)

    return R(responses=[TR(name=name, partition_responses=[answer(item) for item in row])
                        for name, row in outcomes], throttle_time_ms=0)


HANDLERS = {PRODUCE: produce}
