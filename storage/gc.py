"""Finding orphaned ingest objects: PUT by a flush whose commit never happened.

A flush PUTs ``ingest/<session>/<seq>.avro`` first and commits it second
(see `partition_log`), so a crash, a fence or a voided commit in between
leaves an object nothing refers to.  Readers never see it (only commit-log
items lead to objects), but it costs storage until it is deleted.

An object is an orphan when its commit-log item ``log#<session>/<seq>`` is
absent or void *and can never be written any more*.  The second half is
what makes deletion safe, and holds in exactly these cases:

* a void item is there: the create-only commit can no longer land;
* the session is over (its broker item shows a newer epoch, ``fenced`` or
  not ``alive``): every commit carries a Check that the session is current,
  live and unfenced, and that state never comes back;
* the session committed (or voided) a later seq: one session's commits are
  strictly sequential, so the attempt for this seq has finished.

The order of reads matters.  The session is read *before* its commit log,
so a commit that landed before the session ended is in the log we read.  A
later seq seen in a Query does not prove the Query also saw this seq's item
(a Query is no snapshot), so such candidates are confirmed with a strongly
consistent GetItem issued after the Query.

The grace period (``older_than_ms``) is defence in depth and keeps a sweep
away from objects whose flush is still in progress; safety does not rest on
it.

"Referenced" here means referenced by a commit-log item.  Once checkpoints
cover a commit, `sweeper` may delete its commit-log item while checkpoint
index objects still reference the object, so on its own this function is a
deletion test only while commit logs are complete; the sweeper combines it
with the checkpoint references (and keeps a live session's latest item,
which the "later seq settled" rule needs).

Cost per sweep: one LIST page per 1000 ingest objects, then per session
with candidates one GetItem (the session) and one Query (its commit log,
~1 read unit per 4 KB), plus one GetItem per candidate of a live session.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import keys
from .model import Item
from .ports import MetaStore, ObjectStore

INGEST_PREFIX = "ingest/"


@dataclass(frozen=True, slots=True)
class IngestKey:
    key: str
    session: str
    node_id: int
    epoch: int
    seq: int


def parse_ingest_key(key: str) -> IngestKey | None:
    """The session and seq an ingest object key encodes, or None for a key tidelog did not write."""
    if not key.startswith(INGEST_PREFIX) or not key.endswith(".avro"):
        return None
    session, slash, name = key[len(INGEST_PREFIX):-len(".avro")].partition("/")
    node, dash, epoch = session.rpartition("-")
    if not slash or not dash or not (node.isdigit() and epoch.isdigit() and name.isdigit()):
        return None
    parsed = IngestKey(key, session, int(node), int(epoch), int(name))
    if keys.ingest_object_key(parsed.session, parsed.seq) != key:
        return None  # not our exact spelling (e.g. unpadded seq): leave it alone
    return parsed


def _session_over(broker_item: Item | None, epoch: int) -> bool:
    if broker_item is None:
        return True  # no broker item: no commit Check can pass
    a = broker_item.attrs
    return int(a["epoch"]) != epoch or bool(a.get("fenced", False)) or not bool(a.get("alive", True))


def _referenced(item: Item | None) -> bool:
    return item is not None and not item.get("void")


async def find_orphans(objects: ObjectStore, meta: MetaStore, older_than_ms: int, now_ms: int) -> list[str]:
    """Ingest objects last modified at least ``older_than_ms`` before ``now_ms`` that no commit-log
    item references and none ever can; sorted keys.  Never returns an object a commit-log item
    references (see the module docstring for objects only checkpoints still reference)."""
    cutoff = now_ms - older_than_ms
    by_session: dict[str, list[IngestKey]] = {}
    async for info in objects.list(INGEST_PREFIX):
        if info.last_modified_ms > cutoff:
            continue
        parsed = parse_ingest_key(info.key)
        if parsed is not None:
            by_session.setdefault(parsed.session, []).append(parsed)
    orphans: list[str] = []
    for session, candidates in by_session.items():
        first = candidates[0]
        # Read the session before its commit log (see the module docstring).
        over = _session_over(await meta.get(keys.BROKERS_PK, keys.broker_sk(first.node_id)), first.epoch)
        pk = keys.commit_log_pk(session)
        log = {item.sk: item for item in await meta.query(pk)}
        last_settled = max((int(sk) for sk in log), default=-1)
        for obj in candidates:
            item = log.get(keys.commit_log_sk(obj.seq))
            if _referenced(item):
                continue
            if item is None and not over:
                if obj.seq >= last_settled:
                    continue  # the live session may still commit it
                if _referenced(await meta.get(pk, keys.commit_log_sk(obj.seq))):
                    continue
            orphans.append(obj.key)
    return sorted(orphans)
