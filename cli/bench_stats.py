"""Pure parts of `tidelog bench`: payloads, pacing and the numbers reported.

Latency percentiles use the nearest-rank method on every sample (no
histogram buckets), so p50 <= p95 <= p99 <= max holds by construction and
the figures are exact for the run.

End-to-end probes carry their own send time: the first 24 bytes of an e2e
payload are ``MAGIC | sequence (u64) | send time (u64 ns)``, big-endian.  The
producer and the consumer run in one process, so the monotonic clock is
shared and immune to wall-clock steps.
"""

from __future__ import annotations

import math
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

MIB = 1024 * 1024
PROBE_MAGIC = b"TLBENCH1"
_PROBE = struct.Struct(">8sQQ")
PROBE_SIZE = _PROBE.size  # 24


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float] | None:
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    return {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95), "p99": percentile(ordered, 99),
            "max": ordered[-1], "mean": sum(ordered) / len(ordered)}


@dataclass(frozen=True, slots=True)
class Result:
    mode: str
    topic: str
    records: int
    record_size: int
    seconds: float
    errors: int = 0
    latency_ms: dict[str, float] | None = None
    settings: dict = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.records * self.record_size

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"mode": self.mode, "topic": self.topic, "records": self.records, "record_size": self.record_size,
                "bytes": self.bytes, "elapsed_s": round(self.seconds, 6),
                "records_per_s": round(self.records_per_s, 3), "mib_per_s": round(self.mib_per_s, 6),
                "latency_ms": None if self.latency_ms is None else {k: round(v, 3) for k, v in self.latency_ms.items()},
                "errors": self.errors, "settings": self.settings}


LATENCY_LABEL = {"produce": "send -> delivery report", "e2e": "send -> receipt by consumer"}


def render(result: Result) -> str:
    """The final table: one header row and one row of figures, plus a line of settings."""
    from .common import format_table

    lat = result.latency_ms
    headers = ["records", "records/s", "MiB/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"]
    row = [result.records, f"{result.records_per_s:,.1f}", f"{result.mib_per_s:,.2f}"]
    row += [f"{lat[k]:.2f}" if lat else "-" for k in ("p50", "p95", "p99", "max")] + [result.errors]
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    direction = "from" if result.mode == "consume" else "to"
    lines = [f"bench {result.mode}: {result.records} records of {result.record_size} B {direction} {result.topic} "
             f"in {result.seconds:.2f} s ({settings})", format_table(headers, [row])]
    if lat and result.mode in LATENCY_LABEL:
        lines.append(f"latency: {LATENCY_LABEL[result.mode]}")
    return "\n".join(lines)


class Throttle:
    """Paces sends to ``rate`` records/s on average (``rate <= 0``: no limit).

    ``wait_fn`` is how to pass the time; the producer's ``poll`` is a good one,
    serving delivery reports while it waits.  The clock is injected for tests.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 wait_fn: Callable[[float], object] = time.sleep) -> None:
        self.rate = rate
        self.clock = clock
        self.wait_fn = wait_fn
        self.start: float | None = None

    def delay(self, sent: int) -> float:
        """Seconds to wait before record number ``sent`` (0-based) may go."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        if self.start is None:
            self.start = now
        return max(0.0, self.start + sent / self.rate - now)

    def wait(self, sent: int) -> None:
        # Loop: a wait_fn such as Producer.poll returns early once it has served a callback.
        pause = self.delay(sent)
        while pause > 0:
            self.wait_fn(pause)
            pause = self.delay(sent)


def filler(size: int, variants: int = 64) -> list[bytes]:
    """Record bodies of random capital letters, like kafka-producer-perf-test's.

    Letters compress somewhat, so ``--compression`` has something to do;
    several variants keep batches from being trivially repetitive.
    """
    pool = bytes(65 + b % 26 for b in os.urandom(size + variants))
    return [pool[i:i + size] for i in range(variants)]


def make_probe(seq: int, sent_ns: int, body: bytes) -> bytes:
    """An e2e payload of ``len(body)`` bytes whose head is the probe header."""
    return _PROBE.pack(PROBE_MAGIC, seq, sent_ns) + body[PROBE_SIZE:]


def read_probe(value: bytes | None) -> tuple[int, int] | None:
    """(sequence, send time ns) of a probe, or None for a foreign record."""
    if value is None or len(value) < PROBE_SIZE:
        return None
    magic, seq, sent_ns = _PROBE.unpack_from(value)
    return (seq, sent_ns) if magic == PROBE_MAGIC else None
