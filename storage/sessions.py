"""Broker sessions: the registry item each broker renews, and fencing of dead ones.

One item per node id (``brokers`` / ``<node id>``).  Starting a broker bumps
the item's ``epoch``, which ends the previous run's session: every commit the
old run attempts is conditioned on its own epoch and fails from then on.
Renewals bump ``heartbeat``; fencing sets ``fenced`` conditioned on the exact
heartbeat observed (see `leases`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import keys
from .conditions import ABSENT, Check, Put, where
from .errors import Conflict, Fenced
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
        return Check(keys.BROKERS_PK, keys.broker_sk(self.node_id), where(epoch=self.epoch, fenced=False))

    @classmethod
    async def register(cls, meta: MetaStore, info: BrokerInfo, now_ms: int) -> "Session":
        """Start a new session for ``info.node_id``, ending any previous one of that node."""
        sk = keys.broker_sk(info.node_id)
        while True:
            current = await meta.get(keys.BROKERS_PK, sk)
            epoch = 1 if current is None else int(current.attrs["epoch"]) + 1
            attrs: dict[str, Any] = {
                "node_id": info.node_id, "host": info.host, "port": info.port, "rack": info.rack,
                "epoch": epoch, "heartbeat": 0, "fenced": False, "alive": True, "started_ms": now_ms,
            }
            item = Item(keys.BROKERS_PK, sk, attrs)
            condition = ABSENT if current is None else where(epoch=epoch - 1, heartbeat=int(current.attrs["heartbeat"]))
            try:
                await meta.write([Put(item, condition)])
            except Conflict:
                continue
            return cls(meta, info, epoch, item)

    async def renew(self) -> None:
        """Bump our heartbeat; raises `Fenced` if another broker fenced us or we were restarted."""
        attrs = dict(self._item.attrs)
        attrs["heartbeat"] = int(attrs["heartbeat"]) + 1
        item = Item(self._item.pk, self._item.sk, attrs)
        try:
            await self.meta.write([Put(item, where(epoch=self.epoch, fenced=False, heartbeat=int(self._item.attrs["heartbeat"])))])
        except Conflict as exc:
            raise Fenced("broker session is fenced", node=self.node_id, epoch=self.epoch, current=exc.current) from exc
        self._item = item

    async def close(self) -> None:
        """Mark the session over so others may take our leases at once (graceful shutdown)."""
        attrs = dict(self._item.attrs)
        attrs["alive"] = False
        item = Item(self._item.pk, self._item.sk, attrs)
        try:
            await self.meta.write([Put(item, where(epoch=self.epoch, heartbeat=int(self._item.attrs["heartbeat"])))])
        except Conflict:
            return  # already fenced or restarted: nothing of ours to release
        self._item = item


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
