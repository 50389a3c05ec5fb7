"""Retry with capped exponential backoff and full jitter, for `Unavailable` errors only."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

from .errors import Unavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    first_ms: int = 20
    max_ms: int = 2_000
    attempts: int = 8

    def delay_ms(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_ms, self.first_ms * 2 ** attempt))


async def with_retries(call: Callable[[], Awaitable[T]], backoff: Backoff = Backoff(),
                       rng: random.Random | None = None,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    rng = rng or random.Random()
    for attempt in range(backoff.attempts):
        try:
            return await call()
        except Unavailable:
            if attempt == backoff.attempts - 1:
                raise
            await sleep(backoff.delay_ms(attempt, rng) / 1000)
    raise AssertionError("unreachable")


async def put_once(objects, key: str, data: bytes, backoff: Backoff = Backoff()) -> None:
    """Store an object whose key names its content (a session seq, a digest): an
    `AlreadyExists` means an earlier attempt of ours landed, so it counts as done."""
    from .errors import AlreadyExists

    async def attempt() -> None:
        try:
            await objects.put_if_absent(key, data)
        except AlreadyExists:
            return
    await with_retries(attempt, backoff)
