"""Topics: names, ids, partition counts and configs, changed only by conditional writes.

A topic's partitions key their state on the topic *id*, so deleting and
re-creating a name starts from a clean log.  Deleting a topic removes its
catalog item; its objects become garbage for tiering GC to collect.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import keys
from .conditions import ABSENT, Delete, Put, where
from .errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from .model import Item
from .ports import MetaStore

INVALID_TOPIC_EXCEPTION = 17
INVALID_PARTITIONS = 37
INVALID_CONFIG = 40

MAX_NAME = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")

# Topic-level configs we understand, with Kafka's defaults (as strings, as on the wire).
DEFAULT_CONFIGS: dict[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "delete.retention.ms": "86400000",
    "min.compaction.lag.ms": "0",
    "segment.bytes": "67108864",
    "compression.type": "producer",
}
_LONG_CONFIGS = {"retention.ms", "retention.bytes", "max.message.bytes", "delete.retention.ms",
                 "min.compaction.lag.ms", "segment.bytes"}
_ENUM_CONFIGS = {
    "cleanup.policy": {"delete", "compact", "compact,delete", "delete,compact"},
    "message.timestamp.type": {"CreateTime", "LogAppendTime"},
    "compression.type": {"producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"},
}


class InvalidTopic(InvalidRequest):
    kafka_code = INVALID_TOPIC_EXCEPTION


class InvalidPartitions(InvalidRequest):
    kafka_code = INVALID_PARTITIONS


class InvalidConfig(InvalidRequest):
    kafka_code = INVALID_CONFIG


class TopicNotFound(NotFound):
    kafka_code = 3


def validate_topic_name(name: str) -> None:
    if not name or name in (".", "..") or len(name) > MAX_NAME or not _LEGAL.match(name):
        raise InvalidTopic("invalid topic name: use 1-249 of [a-zA-Z0-9._-], not '.' or '..'", topic=name)


def validate_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for name, value in configs.items():
        if name not in DEFAULT_CONFIGS:
            raise InvalidConfig("unknown topic config", config=name)
        if value is None:
            continue
        if name in _LONG_CONFIGS:
            try:
                number = int(value)
            except ValueError:
                raise InvalidConfig("topic config must be an integer", config=name, value=value) from None
            if number < -1:
                raise InvalidConfig("topic config must be >= -1", config=name, value=value)
        elif value not in _ENUM_CONFIGS[name]:
            raise InvalidConfig("topic config has an unsupported value", config=name, value=value)
        clean[name] = str(value)
    return clean


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    topic_id: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def config(self, name: str) -> str:
        return self.configs.get(name, DEFAULT_CONFIGS[name])

    def config_int(self, name: str) -> int:
        return int(self.config(name))

    @property
    def compacted(self) -> bool:
        return "compact" in self.config("cleanup.policy")

    def to_item(self) -> Item:
        return Item(keys.TOPICS_PK, keys.topic_sk(self.name), {
            "topic_id": self.topic_id, "partitions": self.partitions,
            "configs": dict(self.configs), "version": self.version,
        })

    @classmethod
    def from_item(cls, item: Item) -> "Topic":
        a = item.attrs
        return cls(item.sk, str(a["topic_id"]), int(a["partitions"]), dict(a.get("configs") or {}), int(a.get("version", 0)))


class Catalog:
    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta

    async def create(self, name: str, partitions: int, configs: Mapping[str, str | None] | None = None,
                     *, validate_only: bool = False) -> Topic:
        validate_topic_name(name)
        if partitions < 1 or partitions > 100_000:
            raise InvalidPartitions("partition count must be between 1 and 100000", partitions=partitions)
        topic = Topic(name, str(uuid.uuid4()), partitions, validate_configs(configs or {}), 0)
        if validate_only:
            if await self.get(name) is not None:
                raise AlreadyExists("topic already exists", topic=name)
            return topic
        try:
            await self.meta.write([Put(topic.to_item(), ABSENT)])
        except Conflict as exc:
            raise AlreadyExists("topic already exists", topic=name) from exc
        return topic

    async def get(self, name: str) -> Topic | None:
        item = await self.meta.get(keys.TOPICS_PK, keys.topic_sk(name))
        return None if item is None else Topic.from_item(item)

    async def require(self, name: str) -> Topic:
        topic = await self.get(name)
        if topic is None:
            raise TopicNotFound("unknown topic", topic=name)
        return topic

    async def list(self) -> list[Topic]:
        return [Topic.from_item(i) for i in await self.meta.query(keys.TOPICS_PK)]

    async def delete(self, name: str) -> Topic:
        topic = await self.require(name)
        try:
            await self.meta.write([Delete(keys.TOPICS_PK, keys.topic_sk(name), where(topic_id=topic.topic_id))])
        except Conflict as exc:
            raise TopicNotFound("unknown topic", topic=name) from exc
        return topic

    async def _replace(self, topic: Topic, **changes: Any) -> Topic:
        updated = Topic(topic.name, topic.topic_id, changes.get("partitions", topic.partitions),
                        changes.get("configs", topic.configs), topic.version + 1)
        await self.meta.write([Put(updated.to_item(), where(topic_id=topic.topic_id, version=topic.version))])
        return updated

    async def add_partitions(self, name: str, total: int, *, validate_only: bool = False) -> Topic:
        while True:
            topic = await self.require(name)
            if total <= topic.partitions:
                raise InvalidPartitions("partition count can only grow", topic=name, current=topic.partitions, requested=total)
            if total > 100_000:
                raise InvalidPartitions("partition count must be at most 100000", partitions=total)
            if validate_only:
                return topic
            try:
                return await self._replace(topic, partitions=total)
            except Conflict:
                continue

    async def alter_configs(self, name: str, set_: Mapping[str, str], delete: list[str] | tuple[str, ...] = (),
                            *, replace: bool = False, validate_only: bool = False) -> Topic:
        validate_configs({**set_, **{k: None for k in delete}})
        while True:
            topic = await self.require(name)
            configs = {} if replace else dict(topic.configs)
            configs.update(validate_configs(set_))
            for key in delete:
                configs.pop(key, None)
            if validate_only:
                return topic
            try:
                return await self._replace(topic, configs=configs)
            except Conflict:
                continue
