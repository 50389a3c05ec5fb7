"""Runs the maintenance services over a deployment's partitions.

One entry point shared by the Lambda handlers, ``tidelog tier run`` and the
embedded broker's background task, so all three do the same thing:

* ``retention`` -- `retention.RetentionService` (whole segments past
  ``retention.ms`` / ``retention.bytes``);
* ``tier`` -- `tiering.Tierer` (checkpointed ingest ranges into tier segments);
* ``compaction`` -- `compaction.Compactor` (``cleanup.policy=compact`` topics);
* ``gc`` -- `sweeper.Sweeper` (unreferenced objects, covered commit-log
  items, deleted topics' leftovers; the whole deployment at once).

Every service is safe to run concurrently with itself, with the others and
with the brokers, so overlapping schedules only waste work.  A failure on
one partition is reported in the summary and does not stop the others.
``deadline_ms`` (on the clock's monotonic scale) stops starting new
partitions, so a Lambda returns a summary instead of being killed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .catalog import Catalog, Topic
from .clock import Clock
from .compaction import DEFAULT_MIN_DIRTY_RATIO, Compactor
from .errors import InvalidRequest, TidelogError
from .ports import MetaStore, ObjectStore
from .retention import RetentionService
from .sweeper import SweepPolicy, Sweeper
from .tier_state import IndexCache, bounded_map
from .tiering import Tierer, TierPolicy

log = logging.getLogger("tidelog.maintenance")

JOBS: tuple[str, ...] = ("retention", "tier", "compaction", "gc")

_TIER_OPTIONS = {f.name for f in fields(TierPolicy)}
_SWEEP_OPTIONS = {"grace_ms", "min_age_ms"}


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    tier: TierPolicy = field(default_factory=TierPolicy)
    sweep: SweepPolicy = field(default_factory=SweepPolicy)
    min_dirty_ratio: float = DEFAULT_MIN_DIRTY_RATIO
    concurrency: int = 4  # partitions worked on side by side

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "MaintenanceConfig":
        """Build from flat overrides such as ``{"target_bytes": 1048576, "grace_ms": 0}``."""
        options = dict(options or {})
        unknown = set(options) - _TIER_OPTIONS - _SWEEP_OPTIONS - {"min_dirty_ratio", "concurrency"}
        if unknown:
            raise InvalidRequest("unknown maintenance option", options=",".join(sorted(unknown)))
        try:
            tier = replace(TierPolicy(), **{k: _typed(k, v) for k, v in options.items() if k in _TIER_OPTIONS})
            sweep = replace(SweepPolicy(), **{k: int(v) for k, v in options.items() if k in _SWEEP_OPTIONS})
            ratio = float(options.get("min_dirty_ratio", DEFAULT_MIN_DIRTY_RATIO))
            concurrency = int(options.get("concurrency", 4))
        except (TypeError, ValueError) as exc:
            raise InvalidRequest("bad maintenance option", error=str(exc)) from exc
        if concurrency <= 0 or not 0 <= ratio <= 1:
            raise InvalidRequest("bad maintenance option", concurrency=concurrency, min_dirty_ratio=ratio)
        return cls(tier, sweep, ratio, concurrency)


def _typed(name: str, value: Any) -> Any:
    return str(value) if name == "codec" else int(value)


Owns = Callable[[Topic, int], bool]


class Maintenance:
    """The four jobs over every partition (``owns`` narrows it, e.g. to a broker's own)."""

    def __init__(self, objects: ObjectStore, meta: MetaStore, clock: Clock,
                 config: MaintenanceConfig = MaintenanceConfig(), *, owns: Owns | None = None) -> None:
        self.objects = objects
        self.meta = meta
        self.clock = clock
        self.config = config
        self.owns = owns
        if config.sweep.min_age_ms < config.tier.max_commit_delay_ms:
            # Only safe when nothing tiers or compacts while GC runs (tests, a one-off cleanup).
            log.warning("gc min_age_ms is below the tiering commit delay: a slow swap may name a deleted object",
                        extra={"min_age_ms": config.sweep.min_age_ms,
                               "max_commit_delay_ms": config.tier.max_commit_delay_ms})
        indexes = IndexCache(objects)
        self.tierer = Tierer(objects, meta, clock, config.tier, indexes)
        self.retention = RetentionService(objects, meta, clock, indexes)
        self.compactor = Compactor(objects, meta, clock, config.tier, min_dirty_ratio=config.min_dirty_ratio)
        self.sweeper = Sweeper(objects, meta, clock, config.sweep)

    async def run_all(self, jobs: Iterable[str] = JOBS, *, topics: Sequence[str] | None = None,
                      deadline_ms: int | None = None) -> dict[str, dict]:
        return {job: await self.run(job, topics=topics, deadline_ms=deadline_ms) for job in jobs}

    async def run(self, job: str, *, topics: Sequence[str] | None = None, deadline_ms: int | None = None) -> dict:
        if job not in JOBS:
            raise InvalidRequest("unknown maintenance job", job=job, known=",".join(JOBS))
        if job == "gc":
            return {"job": job, **(await self.sweeper.sweep()).to_json()}
        work = [(t, p) for t in await self._topics(topics) for p in range(t.partitions)
                if self.owns is None or self.owns(t, p)]
        summary: dict[str, Any] = {"job": job, "partitions": len(work), "skipped": 0, "errors": [], "results": []}

        async def one(item: tuple[Topic, int]) -> None:
            topic, partition = item
            if deadline_ms is not None and self.clock.monotonic_ms() >= deadline_ms:
                summary["skipped"] += 1
                return
            try:
                result = await self._run_partition(job, topic, partition)
            except TidelogError as exc:
                log.warning("maintenance failed for a partition",
                            extra={"job": job, "topic": topic.name, "partition": partition, "error": str(exc)})
                summary["errors"].append({"topic": topic.name, "partition": partition, "error": str(exc)})
                return
            if result["state"] not in ("idle", "not-compacted-topic"):
                summary["results"].append(result)
        await bounded_map(one, work, self.config.concurrency)
        summary["results"].sort(key=lambda r: (r["topic"], r["partition"]))
        summary["totals"] = _totals(summary["results"])
        return summary

    async def _topics(self, names: Sequence[str] | None) -> list[Topic]:
        topics = await Catalog(self.meta).list()
        if names is None:
            return topics
        wanted = set(names)
        return [t for t in topics if t.name in wanted]

    async def _run_partition(self, job: str, topic: Topic, partition: int) -> dict:
        if job == "tier":
            return (await self.tierer.tier_partition(topic, partition)).to_json()
        if job == "retention":
            return (await self.retention.enforce(topic, partition)).to_json()
        return (await self.compactor.compact_partition(topic, partition)).to_json()


def _totals(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for r in results:
        for k, v in r.items():
            if isinstance(v, int) and not isinstance(v, bool) and k not in ("partition", "log_start",
                                                                             "log_start_before", "cleaned_to"):
                totals[k] = totals.get(k, 0) + v
    return totals


class MaintenanceLoop:
    """Runs every job every ``interval_ms`` until cancelled (the embedded broker's tiering)."""

    def __init__(self, maintenance: Maintenance, interval_ms: int, jobs: Sequence[str] = JOBS) -> None:
        if interval_ms <= 0:
            raise InvalidRequest("maintenance interval must be positive", interval_ms=interval_ms)
        self.maintenance = maintenance
        self.interval = interval_ms / 1000
        self.jobs = tuple(jobs)
        self.rounds = 0

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                summary = await self.maintenance.run_all(self.jobs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - storage trouble: the next round retries
                log.warning("maintenance round failed", extra={"error": repr(exc)})
                continue
            self.rounds += 1
            log.info("maintenance round done", extra={"summary": {k: v.get("totals", {}) for k, v in summary.items()}})
