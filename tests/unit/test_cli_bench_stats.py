"""Bench arithmetic: percentiles, pacing and the e2e probe header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.cli.bench_stats import (PROBE_SIZE, Result, Throttle, filler, latency_summary, make_probe, percentile,
                                     read_probe, render)


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=300))
def test_summary_is_ordered(samples) -> None:
    s = latency_summary(samples)
    assert min(samples) <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"] == max(samples)
    assert min(samples) <= s["mean"] <= max(samples) or s["mean"] == pytest.approx(min(samples))


def test_no_samples_no_latency() -> None:
    assert latency_summary([]) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_throttle_paces_to_the_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(1000, clock=clock, wait_fn=clock.wait)
    for i in range(5000):
        throttle.wait(i)
    assert clock.now - 100.0 == pytest.approx(4.999)  # record 4999 may go at t0 + 4.999 s


def test_throttle_waits_again_when_woken_early() -> None:
    clock = FakeClock()

    def impatient(seconds: float) -> None:  # like Producer.poll serving a callback: returns part-way
        clock.wait(min(seconds, 0.001))

    throttle = Throttle(100, clock=clock, wait_fn=impatient)
    throttle.wait(0)
    throttle.wait(1)
    assert clock.now - 100.0 == pytest.approx(0.01)
    assert len(clock.waits) == 10


def test_throttle_does_not_wait_when_behind_and_unlimited_never_waits() -> None:
    clock = FakeClock()
    throttle = Throttle(10, clock=clock, wait_fn=clock.wait)
    throttle.wait(0)
    clock.now += 5  # a stall: 50 records are now "due"
    for i in range(1, 51):
        throttle.wait(i)
    assert clock.waits == []
    for rate in (0, -1):
        unlimited = Throttle(rate, clock=clock, wait_fn=clock.wait)
        assert all(unlimited.delay(i) == 0 for i in range(100))


def test_probe_round_trip_keeps_size() -> None:
    body = filler(100)[3]
    probe = make_probe(12345, 987654321, body)
    assert len(probe) == 100
    assert read_probe(probe) == (12345, 987654321)
    assert read_probe(body) is None
    assert read_probe(None) is None
    assert read_probe(b"short") is None
    assert PROBE_SIZE == 24


def test_filler_is_letters_of_the_right_size() -> None:
    bodies = filler(50, variants=8)
    assert len(bodies) == 8 and all(len(b) == 50 and b.isalpha() and b.isupper() for b in bodies)


def test_result_figures_and_table() -> None:
    r = Result("produce", "t", 2048, 1024, 2.0, 0, {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.5},
               {"acks": "all"})
    assert r.bytes == 2 * 1024 * 1024
    assert r.records_per_s == 1024 and r.mib_per_s == 1.0
    doc = r.to_json()
    assert doc["records_per_s"] == 1024 and doc["latency_ms"]["p99"] == 3.0
    table = render(r)
    assert "1,024.0" in table and "1.00" in table and "4.00" in table and "acks=all" in table
    assert "send -> delivery report" in table
    consume = render(Result("consume", "t", 10, 1, 1.0))
    assert "from t" in consume and "-" in consume.splitlines()[-1]
