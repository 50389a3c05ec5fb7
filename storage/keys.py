"""Every object key and metadata key tidelog uses, in one place.

Sort keys embed zero-padded numbers so lexical order is numeric order.  Tier
objects use Hive-style ``topic=…/partition=…/`` prefixes so Athena, Spark or
DuckDB can read a topic's history straight from the bucket.
"""

from __future__ import annotations

from urllib.parse import quote

OFFSET_WIDTH = 20
SEQ_WIDTH = 12

# --- metadata partition keys -------------------------------------------------
TOPICS_PK = "topics"
LEASES_PK = "leases"
BROKERS_PK = "brokers"
GROUPS_PK = "groups"
COUNTERS_PK = "counters"
PRODUCER_ID_SK = "producer-id"
STATE_SK = "state"
CHECKPOINT_PREFIX = "ckpt#"
TIER_PREFIX = "tier#"
OFFSET_PREFIX = "off#"
# Per-partition maintenance items (under ``partition_pk``); none starts with a
# checkpoint or tier prefix, so prefix queries never see them.
TIER_HEAD_SK = "tierhead"  # how far the partition is tiered; serialises tierers
LOG_START_SK = "logstart"  # log-start floor set by retention outside the leader
COMPACTION_SK = "compaction"  # how far the tiered log is compacted

# --- object prefixes -------------------------------------------------------------
INGEST_ROOT = "ingest/"
INDEX_ROOT = "index/"
TIER_ROOT = "tier/"
GC_STATE_ROOT = "gc/state/"


def pad_offset(offset: int) -> str:
    return f"{offset:0{OFFSET_WIDTH}d}"


def pad_seq(seq: int) -> str:
    return f"{seq:0{SEQ_WIDTH}d}"


def topic_sk(topic: str) -> str:
    return topic


def broker_sk(node_id: int) -> str:
    return f"{node_id:010d}"


def session_name(node_id: int, epoch: int) -> str:
    """A broker session: one run of one node id.  Commit logs and ingest objects hang off it."""
    return f"{node_id}-{epoch}"


def partition_pk(topic_id: str, partition: int) -> str:
    """Partitions key on the topic *id* so a re-created topic never sees old state."""
    return f"part#{topic_id}#{partition}"


def lease_sk(topic_id: str, partition: int) -> str:
    """All leases share one partition key so a broker reads the whole assignment with one Query."""
    return f"{topic_id}#{partition:010d}"


def checkpoint_sk(end_offset: int, leader_epoch: int, log_from: int) -> str:
    """Checkpoints sort by (end offset, leader epoch, commit seq): the last one is the newest."""
    return f"{CHECKPOINT_PREFIX}{pad_offset(end_offset)}#{leader_epoch:010d}#{pad_seq(log_from)}"


def checkpoints_ending_after(offset: int) -> str:
    """An exclusive ``after`` bound selecting checkpoints whose end offset is > ``offset``."""
    return f"{CHECKPOINT_PREFIX}{pad_offset(offset)}#~"


def tier_sk(end_offset: int) -> str:
    """A tier item, keyed by the EXCLUSIVE end of the offset range it covers.

    ``after=tier_sk(offset)`` therefore selects the items covering ``offset``
    or later, mirroring `checkpoints_ending_after`.
    """
    return TIER_PREFIX + pad_offset(end_offset)


def commit_log_pk(session: str) -> str:
    return f"log#{session}"


def commit_log_sk(seq: int) -> str:
    return pad_seq(seq)


def session_of_object(key: str) -> str | None:
    """The session an ingest or index object key belongs to (None for other keys)."""
    for root in (INGEST_ROOT, INDEX_ROOT):
        if key.startswith(root):
            session, sep, _ = key[len(root):].partition("/")
            return session if sep and session else None
    return None


def group_pk(group: str) -> str:
    return f"group#{group}"


def group_offset_sk(topic: str, partition: int) -> str:
    return f"{OFFSET_PREFIX}{topic}#{partition:010d}"


# --- object keys ---------------------------------------------------------------
def ingest_object_key(session: str, seq: int) -> str:
    return f"{INGEST_ROOT}{session}/{pad_seq(seq)}.avro"


def index_object_key(session: str, seq: int) -> str:
    return f"{INDEX_ROOT}{session}/{pad_seq(seq)}.avro"


def tier_prefix(topic: str, partition: int) -> str:
    return f"{TIER_ROOT}topic={quote(topic, safe='')}/partition={partition}/"


def tier_object_key(topic: str, partition: int, topic_id: str, start: int, end: int, digest: str) -> str:
    """A tier segment covering offsets ``[start, end)``.

    The topic id keeps a re-created topic's segments apart from the old
    one's, and ``digest`` (of the content) gives a compacted rewrite of the
    same range its own key, so create-only PUTs of equal keys always carry
    equal bytes and a retry can treat `AlreadyExists` as success.
    """
    return f"{tier_prefix(topic, partition)}{pad_offset(start)}-{pad_offset(end)}-{topic_id}-{digest}.avro"


def gc_state_key(seq: int) -> str:
    return f"{GC_STATE_ROOT}{pad_seq(seq)}.json"
