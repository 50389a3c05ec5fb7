"""Wires one broker process together and runs it until SIGTERM/SIGINT.

Shutdown order matters: stop accepting, flush and commit everything
buffered (so every acknowledged record is durable and every waiting
producer gets its answer), checkpoint and release leases, end the session,
then close connections.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from tidelog.storage.catalog import Catalog
from tidelog.storage.clock import SYSTEM_CLOCK, Clock
from tidelog.storage.errors import Fenced, NotFound, TidelogError
from tidelog.storage.groups import GroupStore
from tidelog.storage.factory import Storage, StorageConfig, open_storage
from tidelog.storage.leases import LeaseTiming
from tidelog.storage.maintenance import Maintenance, MaintenanceConfig, MaintenanceLoop
from tidelog.storage.partition_log import LogWriter
from tidelog.storage.producer_ids import ProducerIdAllocator
from tidelog.storage.reader import LogReader
from tidelog.storage.replication import ReplicationMonitor
from tidelog.storage.sessions import BrokerInfo, Session

from . import wire
from .cluster import ClusterManager
from .context import BrokerContext
from .groups.coordinator import GroupCoordinator
from .handlers import build_handlers
from .logs import LogManager
from .metrics import METRICS
from .server import KafkaServer
from .settings import Settings

log = logging.getLogger("tidelog.broker")


class StartupError(Exception):
    """A one-line reason the broker cannot start (the CLI prints it and exits non-zero)."""


def storage_config(settings: Settings) -> StorageConfig:
    return StorageConfig(data_dir=settings.data_dir, s3_bucket=settings.s3_bucket,
                         dynamodb_table=settings.dynamodb_table, endpoint_url=settings.endpoint_url,
                         region=settings.region)


class Broker:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.storage: Storage | None = None
        self.session: Session | None = None
        self.logs: LogManager | None = None
        self.groups: GroupCoordinator | None = None
        self.server: KafkaServer | None = None
        self.port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._rejoining: asyncio.Task | None = None
        self._valid_until = 0
        self.cluster: ClusterManager | None = None
        self._fatal: str | None = None

    async def start(self) -> None:
        s = self.settings
        self.storage = await open_storage(storage_config(s))
        try:
            await self.storage.ensure(create=not s.uses_aws)
        except NotFound as exc:
            await self.storage.close()
            raise StartupError(str(exc)) from exc
        self.server = KafkaServer({}, max_request_bytes=s.max_request_bytes)
        self.port = await self.server.start(s.host, s.port, serving=False)  # serve once handlers exist
        me = BrokerInfo(s.node_id, s.public_host, s.advertised_port or self.port, s.rack)
        self.me = me
        self.timing = LeaseTiming(s.lease_ttl_ms)
        renew_started = self.clock.monotonic_ms()
        self.session = await Session.register(self.storage.meta, me, self.clock.now_ms())
        self._valid_until = self.timing.owner_valid_until(renew_started)
        writer = LogWriter(self.storage.objects, self.storage.meta, self.session, self.clock)
        reader = LogReader(self.storage.objects, self.storage.meta, s.read_cache_bytes)
        catalog = Catalog(self.storage.meta)
        self.logs = LogManager(writer, reader, catalog, self.clock, flush_interval_ms=s.flush_interval_ms,
                               flush_bytes=s.flush_bytes, checkpoint_interval_ms=s.checkpoint_interval_ms,
                               tail_cache_bytes=s.tail_cache_bytes)
        self.logs.on_fenced = self._on_fenced
        self.logs.writable = lambda: self.clock.monotonic_ms() < self._valid_until
        await self.logs.start()
        self.cluster = ClusterManager(self.storage.meta, catalog, self.logs, self.clock, self.timing,
                                      lambda: self.me, moves_per_tick=16)
        self.cluster.on_coordinators_changed = self._coordinators_changed
        self.groups = GroupCoordinator(GroupStore(self.storage.meta), self.clock,
                                       offsets_retention_ms=s.offsets_retention_minutes * 60_000)
        self.groups.start()
        ctx = BrokerContext(s, me, catalog, self.logs, ProducerIdAllocator(self.storage.meta), self.clock,
                            groups=self.groups, cluster=self.cluster)
        self.ctx = ctx
        handlers = build_handlers(ctx)
        ctx.extra["apis"] = {k: span for k, span in wire.SUPPORTED_APIS.items() if k in handlers}
        self.server.handlers.update(handlers)
        await self.server.serve()
        self._tasks.append(asyncio.create_task(self._renew_loop(), name="session-renew"))
        self.cluster.start()
        if s.maintenance_interval_ms:
            # Tiering, retention and compaction of the partitions we lead, and GC.
            maintenance = Maintenance(self.storage.objects, self.storage.meta, self.clock,
                                      MaintenanceConfig.from_options({"max_wait_ms": s.tier_max_wait_ms}),
                                      owns=lambda topic, partition: self.logs.state(topic.name, partition) is not None)
            loop = MaintenanceLoop(maintenance, s.maintenance_interval_ms)
            self._tasks.append(asyncio.create_task(loop.run_forever(), name="maintenance"))
        if s.replica_bucket:
            monitor = ReplicationMonitor(self.storage.objects, s.replica_bucket, region=s.replica_region or s.region,
                                         endpoint_url=s.endpoint_url)
            self._tasks.append(asyncio.create_task(monitor.run_forever(METRICS.set_replication), name="replication"))
        if s.metrics_port is not None:
            from prometheus_client import start_http_server
            start_http_server(s.metrics_port, addr=s.host, registry=METRICS.registry)
            self._tasks.append(asyncio.create_task(self._metrics_loop(), name="metrics"))
        log.info("broker started", extra={"node_id": s.node_id, "host": s.host, "port": self.port,
                                          "storage": storage_config(s).describe(), "epoch": self.session.epoch})

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timing.renew_every_ms / 1000)
            started = self.clock.monotonic_ms()
            try:
                await self.session.renew()
                self._valid_until = self.timing.owner_valid_until(started)
            except Fenced:
                # The same task a fenced flush starts: one rejoin, never two sessions.
                self._on_fenced()
                try:
                    await asyncio.shield(self._rejoining)
                except Exception as exc:  # noqa: BLE001 - this loop must outlive any failure
                    log.error("rejoining after being fenced failed", extra={"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - transient store trouble; keep trying
                log.warning("session renewal failed", extra={"error": str(exc)})

    def _on_fenced(self) -> None:
        if self._rejoining is None or self._rejoining.done():
            self._rejoining = asyncio.create_task(self._rejoin(), name="rejoin")

    async def _rejoin(self) -> None:
        """Our session was fenced (we were paused or partitioned past the lease):
        everything we led now belongs to others.  Drop it and start a new session.

        Never raises: registering is retried until it works, because without a
        session this broker can neither renew nor lead anything again.
        """
        log.error("broker session fenced; dropping all partitions and re-registering",
                  extra={"node_id": self.me.node_id, "epoch": self.session.epoch})
        self._valid_until = 0
        async with self.logs._io_lock:
            self.logs.drop_all()
            delay = 0.1
            while True:
                started = self.clock.monotonic_ms()
                try:
                    self.session = await Session.register(self.storage.meta, self.me, self.clock.now_ms())
                    break
                except TidelogError as exc:
                    log.warning("re-registering the broker session failed; retrying", extra={"error": str(exc)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            writer = LogWriter(self.storage.objects, self.storage.meta, self.session, self.clock)
            self.logs.drop_all(writer)
            self._valid_until = self.timing.owner_valid_until(started)
        log.info("broker session re-registered", extra={"node_id": self.me.node_id, "epoch": self.session.epoch})
        if self.groups is not None:
            try:
                await self.groups.forget(lambda group_id: True)
            except Exception as exc:  # noqa: BLE001 - groups reload from the store on next use
                log.warning("dropping cached groups after being fenced failed", extra={"error": str(exc)})

    def _coordinators_changed(self) -> None:
        if self.groups is not None:
            asyncio.create_task(self.groups.forget(lambda group_id: not self.ctx.is_coordinator(group_id)))

    async def _metrics_loop(self) -> None:
        while True:
            METRICS.sync_storage(self.storage.objects.stats, self.storage.meta.stats)
            METRICS.partitions_led.set(len(self.logs.partitions))
            await asyncio.sleep(1)

    def _die(self, reason: str) -> None:
        log.error(reason)
        self._fatal = reason
        self._stopped.set()

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop_accepting()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.logs is not None:
            await self.logs.stop()
        if self.groups is not None:
            await self.groups.stop()
        # Stop renewing before closing the session: a renewal racing the close
        # would fail on the closed session and start a rejoin mid-shutdown.
        for task in [*self._tasks, self._rejoining]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [*self._tasks, self._rejoining] if t is not None], return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        if self.server is not None:
            await self.server.close_connections()
        if self.storage is not None:
            await self.storage.close()
        log.info("broker stopped")

    @property
    def fatal(self) -> str | None:
        return self._fatal


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> int:
    """Run until a signal arrives; returns the process exit code."""
    broker = Broker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, broker.request_stop)
    await broker.start()
    if ready is not None:
        ready.set()
    await broker.wait()
    await broker.stop()
    return 1 if broker.fatal else 0
