"""Injectable time and randomness.

Leases, flush timers and retention take a `Clock` instead of calling
``time`` directly, so tests can drive time and replay races.
"""

from __future__ import annotations

import random
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock milliseconds since the epoch (timestamps, retention)."""

    def monotonic_ms(self) -> int:
        """Milliseconds from an arbitrary origin that never goes backwards (leases, timers)."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now = now_ms
        self._mono = 0

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> int:
        return self._mono

    def advance(self, ms: int) -> None:
        self._now += ms
        self._mono += ms


SYSTEM_CLOCK = SystemClock()


def make_random(seed: int | None = None) -> random.Random:
    return random.Random(seed)
