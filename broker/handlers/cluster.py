"""ApiVersions, Metadata, DescribeCluster and InitProducerId."""

from __future__ import annotations

import uuid

from tidelog.storage.catalog import validate_topic_name
from tidelog.storage.errors import TidelogError

from .. import wire
from ..context import BrokerContext
from ..errors import ErrorCode

API_VERSIONS, METADATA, INIT_PRODUCER_ID, DESCRIBE_CLUSTER = 18, 3, 22, 60


async def api_versions(ctx: BrokerContext, request: wire.DecodedRequest):
    return wire.api_versions_body(request.api_version, apis=ctx.extra.get("apis", wire.SUPPORTED_APIS))


async def metadata(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    R = wire.response_class(METADATA, request.api_version)
    T = R.MetadataResponseTopic
    P = T.MetadataResponsePartition
    wanted = None if body.topics is None else [t.name for t in body.topics]
    if request.api_version == 0 and wanted == []:
        wanted = None  # v0: an empty list means all topics
    auto_create = ctx.settings.auto_create_topics and getattr(body, "allow_auto_topic_creation", True)
    topics_out = []
    if wanted is None:
        topics = await ctx.catalog.list()
        for t in topics:
            await ctx.logs.topic(t.name)
        found = [(t.name, t) for t in topics]
    else:
        found = []
        for name in wanted:
            topic = await ctx.logs.topic(name) if name else None
            if topic is None and auto_create and name:
                try:
                    validate_topic_name(name)
                    topic = await ctx.catalog.create(name, ctx.settings.default_partitions)
                except TidelogError as exc:
                    if getattr(exc, "kafka_code", None) == ErrorCode.TOPIC_ALREADY_EXISTS:
                        topic = await ctx.catalog.get(name)
                    else:
                        topics_out.append(T(error_code=exc.kafka_code, name=name, partitions=[]))
                        continue
                if topic is not None:
                    await ctx.logs.lead_topic(topic)
            found.append((name, topic))
    for name, topic in found:
        if topic is None:
            if not any(t.name == name for t in topics_out):
                topics_out.append(T(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name=name, partitions=[]))
            continue
        parts = []
        for p in range(topic.partitions):
            leader = ctx.leader_of(topic.name, p)
            parts.append(P(error_code=0 if leader >= 0 else ErrorCode.LEADER_NOT_AVAILABLE, partition_index=p,
                           leader_id=leader, leader_epoch=ctx.leader_epoch_of(topic.name, p),
                           replica_nodes=[leader] if leader >= 0 else [], isr_nodes=[leader] if leader >= 0 else [],
                           offline_replicas=[]))
        topics_out.append(T(error_code=0, name=topic.name, topic_id=uuid.UUID(topic.topic_id), is_internal=False,
                            partitions=parts))
    brokers = [R.MetadataResponseBroker(node_id=b.node_id, host=b.host, port=b.port, rack=b.rack) for b in ctx.brokers()]
    return R(throttle_time_ms=0, brokers=brokers, cluster_id=ctx.settings.cluster_id,
             controller_id=ctx.me.node_id, topics=topics_out, error_code=0,
             )


async def describe_cluster(ctx: BrokerContext, request: wire.DecodedRequest):
    R = wire.response_class(DESCRIBE_CLUSTER, request.api_version)
    brokers = [R.DescribeClusterBroker(broker_id=b.node_id, host=b.host, port=b.port, rack=b.rack, is_fenced=False)
               for b in ctx.brokers()]
    return R(throttle_time_ms=0, error_code=0, error_message=None, endpoint_type=1, cluster_id=ctx.settings.cluster_id,
             controller_id=ctx.me.node_id, brokers=brokers)


async def init_producer_id(ctx: BrokerContext, request: wire.DecodedRequest):
    body = request.body
    R = wire.response_class(INIT_PRODUCER_ID, request.api_version)
    if body.transactional_id is not None:
        # Transactions are not offered: no transactional APIs are advertised.
        return R(throttle_time_ms=0, error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                 producer_id=-1, producer_epoch=-1)
    pid = getattr(body, "producer_id", -1)
    epoch = getattr(body, "producer_epoch", -1)
    if pid is not None and pid >= 0 and epoch is not None and 0 <= epoch < 32766:
        return R(throttle_time_ms=0, error_code=0, producer_id=pid, producer_epoch=epoch + 1)
    return R(throttle_time_ms=0, error_code=0, producer_id=await ctx.producer_ids.allocate(), producer_epoch=0)


HANDLERS = {API_VERSIONS: api_versions, METADATA: metadata, DESCRIBE_CLUSTER: describe_cluster,
            INIT_PRODUCER_ID: init_producer_id}
