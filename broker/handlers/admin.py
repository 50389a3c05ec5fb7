"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
IncrementalAlterConfigs.  Every change is one conditional write in the catalog."""

from __future__ import annotations

import uuid

from tidelog.storage.catalog import DEFAULT_CONFIGS
from tidelog.storage.errors import TidelogError

from .. import wire
from ..context import BrokerContext
from ..errors import ErrorCode

CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, CREATE_PARTITIONS, INCREMENTAL_ALTER_CONFIGS = 19, 20, 32, 37, 44
TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4
SOURCE_TOPIC, SOURCE_DEFAULT = 1, 5
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _config_type(name: str) -> int:
    # DescribeConfigs v3 types: 1 boolean, 2 string, 3 int, 4 short, 5 long, 6 double, 7 list...
    return 5 if name.endswith((".ms", ".bytes")) else (7 if name == "cleanup.policy" else 2)


async def create_topics(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    R = wire.response_class(CREATE_TOPICS, request.api_version)
    results = []
    validate_only = bool(getattr(body, "validate_only", False))
    for t in body.topics:
        partitions = ctx.settings.default_partitions if t.num_partitions == -1 else t.num_partitions
        try:
            if t.assignments:
                raise _Refuse(ErrorCode.INVALID_REQUEST, "manual replica assignment is not supported")
            if t.replication_factor == 0 or t.replication_factor < -1:
                raise _Refuse(ErrorCode.INVALID_REPLICATION_FACTOR, "replication factor must be -1 or positive")
            configs = {c.name: c.value for c in t.configs}
            topic = await ctx.catalog.create(t.name, partitions, configs, validate_only=validate_only)
        except (TidelogError, _Refuse) as exc:
            results.append(R.CreatableTopicResult(name=t.name, error_code=exc.kafka_code, error_message=str(exc),
                                                  num_partitions=-1, replication_factor=-1, configs=None))
            continue
        if not validate_only:
            await ctx.logs.lead_topic(topic)
        configs_out = [R.CreatableTopicResult.CreatableTopicConfigs(
            name=k, value=topic.config(k), read_only=False,
            config_source=SOURCE_TOPIC if k in topic.configs else SOURCE_DEFAULT, is_sensitive=False)
            for k in DEFAULT_CONFIGS]
        results.append(R.CreatableTopicResult(name=t.name, topic_id=uuid.UUID(topic.topic_id), error_code=0,
                                              error_message=None, num_partitions=topic.partitions,
                                              replication_factor=1, configs=configs_out))
    return R(throttle_time_ms=0, topics=results)


async def delete_topics(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    R = wire.response_class(DELETE_TOPICS, request.api_version)
    if request.api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in body.topics]
    else:
        wanted = [(n, None) for n in body.topic_names]
    by_id = {}
    if any(name is None for name, _ in wanted):
        by_id = {uuid.UUID(t.topic_id): t.name for t in await ctx.catalog.list()}
    results = []
    for name, topic_id in wanted:
        if name is None:
            name = by_id.get(topic_id)
            if name is None:
                results.append(R.DeletableTopicResult(name=None, topic_id=topic_id, error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                                                      error_message="unknown topic id"))
                continue
        try:
            topic = await ctx.catalog.delete(name)
        except TidelogError as exc:
            results.append(R.DeletableTopicResult(name=name, topic_id=topic_id, error_code=exc.kafka_code,
                                                  error_message=str(exc)))
            continue
        ctx.logs.forget_topic(name)
        results.append(R.DeletableTopicResult(name=name, topic_id=uuid.UUID(topic.topic_id), error_code=0,
                                              error_message=None))
    return R(throttle_time_ms=0, responses=results)


async def create_partitions(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    R = wire.response_class(CREATE_PARTITIONS, request.api_version)
    results = []
    for t in body.topics:
        try:
            if t.assignments:
                raise _Refuse(ErrorCode.INVALID_REQUEST, "manual replica assignment is not supported")
            topic = await ctx.catalog.add_partitions(t.name, t.count, validate_only=body.validate_only)
            if not body.validate_only:
                await ctx.logs.lead_topic(topic)
        except (TidelogError, _Refuse) as exc:
            results.append(R.CreatePartitionsTopicResult(name=t.name, error_code=exc.kafka_code, error_message=str(exc)))
            continue
        results.append(R.CreatePartitionsTopicResult(name=t.name, error_code=0, error_message=None))
    return R(throttle_time_ms=0, results=results)


async def describe_configs(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    v = request.api_version
    R = wire.response_class(DESCRIBE_CONFIGS, v)
    Res = R.DescribeConfigsResult
    C = Res.DescribeConfigsResourceResult
    results = []
    for res in body.resources:
        if res.resource_type == BROKER_RESOURCE:
            values = {"broker.id": (str(ctx.me.node_id), SOURCE_DEFAULT)}
        elif res.resource_type == TOPIC_RESOURCE:
            topic = await ctx.catalog.get(res.resource_name)
            if topic is None:
                results.append(Res(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, error_message="unknown topic",
                                   resource_type=res.resource_type, resource_name=res.resource_name, configs=[]))
                continue
            values = {k: (topic.config(k), SOURCE_TOPIC if k in topic.configs else SOURCE_DEFAULT)
                      for k in DEFAULT_CONFIGS}
        else:
            results.append(Res(error_code=ErrorCode.INVALID_REQUEST, error_message="unsupported resource type",
                               resource_type=res.resource_type, resource_name=res.resource_name, configs=[]))
            continue
        keys = res.configuration_keys
        configs = [C(name=k, value=val, read_only=res.resource_type == BROKER_RESOURCE, config_source=src,
                     is_default=src == SOURCE_DEFAULT, is_sensitive=False, synonyms=[], config_type=_config_type(k),
                     documentation=None)
                   for k, (val, src) in values.items() if keys is None or k in keys]
        results.append(Res(error_code=0, error_message=None, resource_type=res.resource_type,
                           resource_name=res.resource_name, configs=configs))
    return R(throttle_time_ms=0, results=results)


async def incremental_alter_configs(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    R = wire.response_class(INCREMENTAL_ALTER_CONFIGS, request.api_version)
    out = []
    for res in body.resources:
        try:
            if res.resource_type != TOPIC_RESOURCE:
                raise _Refuse(ErrorCode.INVALID_REQUEST, "only topic configs can be altered")
            set_, delete = {}, []
            for c in res.configs:
                if c.config_operation == SET:
                    set_[c.name] = c.value
                elif c.config_operation == DELETE:
                    delete.append(c.name)
                else:
                    raise _Refuse(ErrorCode.INVALID_CONFIG, f"config operation {c.config_operation} is not supported for {c.name}")
            topic = await ctx.catalog.alter_configs(res.resource_name, set_, delete, validate_only=body.validate_only)
            if not body.validate_only:
                await ctx.logs.refresh_topic(topic)
        except (TidelogError, _Refuse) as exc:
            out.append(R.AlterConfigsResourceResponse(error_code=exc.kafka_code, error_message=str(exc),
                                                      resource_type=res.resource_type, resource_name=res.resource_name))
            continue
        out.append(R.AlterConfigsResourceResponse(error_code=0, error_message=None, resource_type=res.resource_type,
                                                  resource_name=res.resource_name))
    return R(throttle_time_ms=0, responses=out)


class _Refuse(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.kafka_code = code


HANDLERS = {CREATE_TOPICS: create_topics, DELETE_TOPICS: delete_topics, CREATE_PARTITIONS: create_partitions,
            DESCRIBE_CONFIGS: describe_configs, INCREMENTAL_ALTER_CONFIGS: incremental_alter_configs}
