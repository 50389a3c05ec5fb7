"""Group and member state for the coordinator (no I/O).

States follow Kafka's classic protocol: Empty → PreparingRebalance →
CompletingRebalance → Stable, back to PreparingRebalance on any membership
change, and Dead once deleted.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from tidelog.storage.groups import CommittedOffset

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


@dataclass(slots=True)
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    last_seen_ms: int
    assignment: bytes = b""
    join_future: asyncio.Future | None = None
    sync_future: asyncio.Future | None = None

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    @property
    def is_static(self) -> bool:
        return self.instance_id is not None


@dataclass(slots=True)
class Group:
    name: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)  # group.instance.id -> member id
    pending: dict[str, int] = field(default_factory=dict)  # member ids handed out, awaiting their join
    rebalance_started_ms: int = 0
    join_not_before_ms: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    empty_since_ms: int | None = None
    moved: bool = False  # Dead because another broker coordinates it now, not because it was deleted

    def rebalance_deadline_ms(self) -> int:
        timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        return self.rebalance_started_ms + timeout

    def all_joined(self) -> bool:
        return bool(self.members) and all(m.join_future is not None for m in self.members.values()) \
            and not self.pending

    def select_protocol(self) -> str | None:
        """The protocol every member supports, by most first-choice votes, as Kafka does."""
        members = list(self.members.values())
        if not members:
            return None
        common = set(members[0].protocol_names())
        for m in members[1:]:
            common &= set(m.protocol_names())
        if not common:
            return None
        votes: dict[str, int] = {}
        for m in members:
            choice = next(n for n in m.protocol_names() if n in common)
            votes[choice] = votes.get(choice, 0) + 1
        order = members[0].protocol_names()
        return max(sorted(common, key=order.index), key=lambda n: votes.get(n, 0))

    def supports(self, protocol_type: str, names: list[str]) -> bool:
        """Whether a member with these protocols may join, as Kafka decides it.

        The type is compared with the current members' (``self.protocol_type``
        is only set once a rebalance completes, so members joining the first
        rebalance of a group would otherwise be refused).
        """
        if not self.members:
            return bool(protocol_type) and bool(names)
        if any(m.protocol_type != protocol_type for m in self.members.values()):
            return False
        common = set(names)
        for m in self.members.values():
            common &= set(m.protocol_names())
        return bool(common)

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to, or None when that cannot be known.

        Only consumer-protocol groups say what they subscribe to (the
        subscription's topic list leads every version of its layout).  None
        means "assume every topic", which is what offset deletion and expiry
        need to stay safe.
        """
        if self.protocol_type != CONSUMER_PROTOCOL or self.protocol is None or not self.members:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            parsed = subscription_topics(m.metadata_for(self.protocol))
            if parsed is None:
                return None
            topics |= parsed
        return topics

    def expired_offsets(self, offsets: list[CommittedOffset], now_ms: int,
                        retention_ms: int) -> list[CommittedOffset]:
        """Which committed offsets have expired, by Kafka's rules (KIP-211).

        * A group that has had members and is Empty: all of them, once it has
          been empty for the retention period (by commit time if we do not
          know when it emptied).
        * Offsets committed from outside any group (no protocol type): each a
          retention period after its own last commit.
        * A Stable consumer group: offsets of topics it no longer subscribes
          to, a retention period after their last commit.
        * Otherwise none: a rebalancing group's offsets are in use.
        """
        if self.state == EMPTY and self.protocol_type:
            since = self.empty_since_ms
            return [o for o in offsets if now_ms - (since if since is not None else o.commit_ms) >= retention_ms]
        if self.state == EMPTY:
            return [o for o in offsets if now_ms - o.commit_ms >= retention_ms]
        if self.state == STABLE and self.protocol_type == CONSUMER_PROTOCOL:
            subscribed = self.subscribed_topics()
            if subscribed is not None:
                return [o for o in offsets if o.topic not in subscribed and now_ms - o.commit_ms >= retention_ms]
        return []


CONSUMER_PROTOCOL = "consumer"


def subscription_topics(data: bytes) -> set[str] | None:
    """The topic list of a consumer-protocol subscription (int16 version, then topics[]), or None if malformed."""
    try:
        pos = 2
        (count,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if count < 0:
            return None
        topics = set()
        for _ in range(count):
            (length,) = struct.unpack_from(">h", data, pos)
            pos += 2
            if length < 0 or pos + length > len(data):
                return None
            topics.add(data[pos:pos + length].decode())
            pos += length
        return topics
    except (struct.error, UnicodeDecodeError):
        return None
