"""Broker sessions: the registry item each broker renews, and fencing of dead ones.

One item per node id (``brokers`` / ``<node id>``).  Starting a broker bumps
the item's ``epoch``, which ends the previous run's session: every commit the
old run attempts is conditioned on its own epoch and fails from then on.
Renewals bump ``heartbeat``; fencing sets ``fenced`` conditioned on the exact
heartbeat observed (see `leases`); a graceful shutdown sets ``alive`` false.

A session is *over* once its epoch moved on, it was fenced, or it closed,
and an over session never comes back: every commit carries `check_op`
(same epoch, unfenced, alive), so nothing it attempts afterwards lands.
Garbage collection relies on that too (see `gc`).

Every write here is conditioned on the heartbeat it read, and its reply can
be lost (a timeout after DynamoDB applied it).  A retry then finds the
heartbeat already bumped by our own lost write; `renew` and `close`
recognise that case (same epoch, unfenced, heartbeat exactly one ahead)
instead of mistaking it for being fenced.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from . import keys
from .conditions import ABSENT, Check, Put, where
from .errors import Conflict, Fenced, Unavailable
from .leases import SessionView
from .model import Item
from .ports import MetaStore


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None = None


def view_of(item: Item) -> SessionView:
    return SessionView(
        node_id=int(item.attrs["node_id"]),
        epoch=int(item.attrs["epoch"]),
        heartbeat=int(item.attrs["heartbeat"]),
        fenced=bool(item.attrs.get("fenced", False)),
        alive=bool(item.attrs.get("alive", True)),
    )


def info_of(item: Item) -> BrokerInfo:
    a = item.attrs
    return BrokerInfo(int(a["node_id"]), str(a["host"]), int(a["port"]), a.get("rack"))


class Session:
    """This broker's own session.  ``check_op`` is the condition every commit carries."""

    def __init__(self, meta: MetaStore, info: BrokerInfo, epoch: int, item: Item) -> None:
        self.meta = meta
        self.info = info
        self.epoch = epoch
        self._item = item

    @property
    def name(self) -> str:
        return keys.session_name(self.info.node_id, self.epoch)

    @property
    def node_id(self) -> int:
        return self.info.node_id

    def check_op(self) -> Check:
        return Check(keys.BROKERS_PK, keys.broker_sk(self.node_id), where(epoch=self.epoch, fenced=False, alive=True))

    @classmethod
    async def register(cls, meta: MetaStore, info: BrokerInfo, now_ms: int, attempts: int = 8) -> "Session":
        """Start a new session for ``info.node_id``, ending any previous one of that node.

        An unknown outcome is harmless here: the retry reads the item again and
        takes the next epoch, so at worst one epoch is skipped.
        """
        sk = keys.broker_sk(info.node_id)
        for attempt in range(attempts):
            try:
                current = await meta.get(keys.BROKERS_PK, sk)
                epoch = 1 if current is None else int(current.attrs["epoch"]) + 1
                attrs: dict[str, Any] = {
                    "node_id": info.node_id, "host": info.host, "port": info.port, "rack": info.rack,
                    "epoch": epoch, "heartbeat": 0, "fenced": False, "alive": True, "started_ms": now_ms,
                }
                item = Item(keys.BROKERS_PK, sk, attrs)
                condition = ABSENT if current is None else where(epoch=epoch - 1, heartbeat=int(current.attrs["heartbeat"]))
                await meta.write([Put(item, condition)])
            except Conflict:
                continue
            except Unavailable:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))
                continue
            return cls(meta, info, epoch, item)
        raise Unavailable("could not register a broker session; the registry item keeps changing",
                          node=info.node_id)

    def _is_own_next(self, current: Item | None, heartbeat: int) -> bool:
        """Whether ``current`` is our own earlier write (whose reply was lost) reaching ``heartbeat``."""
        if current is None:
            return False
        a = current.attrs
        return (int(a.get("epoch", -1)) == self.epoch and not a.get("fenced", False)
                and int(a.get("heartbeat", -1)) == heartbeat)

    async def _bump(self, **changes: object) -> int:
        """Write our item with the heartbeat advanced (and ``changes``), conditioned on the
        heartbeat we hold; returns the heartbeat written.  A `Conflict` carries the current item."""
        heartbeat = int(self._item.attrs["heartbeat"]) + 1
        item = Item(self._item.pk, self._item.sk, {**self._item.attrs, **changes, "heartbeat": heartbeat})
        await self.meta.write([Put(item, where(epoch=self.epoch, fenced=False, heartbeat=heartbeat - 1))])
        self._item = item
        return heartbeat

    async def renew(self) -> None:
        """Bump our heartbeat; raises `Fenced` if another broker fenced us or we were restarted."""
        for _ in range(2):
            try:
                await self._bump()
                return
            except Conflict as exc:
                if self._is_own_next(exc.current, int(self._item.attrs["heartbeat"]) + 1):
                    # An earlier renewal landed although we never heard back.  It may be
                    # older than our trust window assumes, so renew once more.
                    self._item = exc.current
                    continue
                raise Fenced("broker session is fenced", node=self.node_id, epoch=self.epoch,
                             current=exc.current) from exc
        raise Fenced("broker session heartbeat keeps moving under us", node=self.node_id, epoch=self.epoch)

    async def close(self) -> None:
        """Mark the session over so others may take our leases at once (graceful shutdown).

        Also bumps the heartbeat, so a renewal still in flight cannot revive the
        session; callers stop renewing first anyway.
        """
        for _ in range(3):
            try:
                await self._bump(alive=False)
                return
            except Conflict as exc:
                if self._is_own_next(exc.current, int(self._item.attrs["heartbeat"]) + 1):
                    self._item = exc.current
                    if not exc.current.get("alive", True):
                        return  # our close landed; its reply was lost
                    continue  # a renewal landed meanwhile: close on top of it
                return  # fenced or restarted: the session is over already
            except Unavailable:
                await asyncio.sleep(0.2)  # the retry recognises a close that did land
                continue
        # Still unknown: others take our leases once the session expires instead.


async def list_sessions(meta: MetaStore) -> list[Item]:
    return await meta.query(keys.BROKERS_PK)


async def fence(meta: MetaStore, view: SessionView) -> bool:
    """Fence ``view``'s session if it still shows the heartbeat we watched expire."""
    sk = keys.broker_sk(view.node_id)
    current = await meta.get(keys.BROKERS_PK, sk)
    if current is None or view_of(current) != view:
        return False
    attrs = dict(current.attrs)
    attrs["fenced"] = True
    try:
        await meta.write([Put(Item(keys.BROKERS_PK, sk, attrs), where(epoch=view.epoch, heartbeat=view.heartbeat))])
    except Conflict:
        return False
    return True
