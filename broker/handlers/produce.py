"""Produce: validate and buffer every partition, then answer once their flush commits."""

from __future__ import annotations

import asyncio

from .. import wire
from ..context import BrokerContext
from ..errors import ErrorCode
from ..logs import Appended, ProduceError, Waiting
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

    # Every partition is buffered before the request waits, with no task per
    # partition: one wait covers them all, as they share the next flush.
    outcomes: list[tuple[str, list[tuple[int, Appended | Waiting | ProduceError]]]] = []
    for t in body.topic_data:
        topic = await ctx.logs.topic(t.name) if refusal == ErrorCode.NONE else None
        row = []
        for p in t.partition_data:
            if refusal != ErrorCode.NONE:
                row.append((p.index, ProduceError(refusal)))
                continue
            try:
                if p.records:
                    METRICS.bytes_in.inc(len(p.records))
                row.append((p.index, ctx.logs.enqueue(topic, t.name, p.index, p.records, acks)))
            except ProduceError as exc:
                row.append((p.index, exc))
        outcomes.append((t.name, row))
    waits = [o.future for _, row in outcomes for _, o in row if isinstance(o, Waiting)]
    if waits:
        await asyncio.wait(waits)
    if acks == 0:
        return None

    # Produce v8+ error messages explain per-partition failures; a refused request has none.
    explain = request.api_version >= 8 and refusal == ErrorCode.NONE

    def answer(partition: int, outcome: Appended | Waiting | ProduceError):
        if isinstance(outcome, Waiting):
            error = outcome.future.exception()
            if error is not None and not isinstance(error, ProduceError):
                raise error
            outcome = error or Appended(outcome.future.result(), outcome.state.log_start_offset)
        if isinstance(outcome, ProduceError):
            return PR(index=partition, error_code=outcome.code, base_offset=-1, log_append_time_ms=-1,
                      log_start_offset=-1, error_message=str(outcome) if explain else None)
        return PR(index=partition, error_code=0, base_offset=outcome.base_offset, log_append_time_ms=-1,
                  log_start_offset=outcome.log_start_offset)

    return R(responses=[TR(name=name, partition_responses=[answer(*item) for item in row])
                        for name, row in outcomes], throttle_time_ms=0)


HANDLERS = {PRODUCE: produce}
