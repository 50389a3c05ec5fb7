"""CLI error text, time parsing and offset-reset planning (pure parts)."""

from __future__ import annotations

from datetime import datetime

import click
import pytest

from tidelog.cli.common import format_table, parse_key_value, parse_timestamp_ms
from tidelog.cli.errors import explain, one_line, transport_reason
from tidelog.cli.offset_plan import Reset, lag, plan_reset


@pytest.mark.parametrize("message, reason", [
    ("127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
     "connection refused"),
    ("h:9092/bootstrap: Failed to resolve 'h:9092': Name or service not known (after 2ms in state CONNECT)",
     "host name not found"),
    ("1/1 brokers are down", None),
])
def test_transport_reason(message, reason) -> None:
    assert transport_reason(message) == reason


@pytest.mark.parametrize("name, expected", [
    ("UNKNOWN_TOPIC_OR_PART", "topic 'orders' does not exist: list topics with `tidelog topic list`"),
    ("_UNKNOWN_TOPIC", "topic 'orders' does not exist"),
    ("TOPIC_ALREADY_EXISTS", "topic 'orders' already exists: pass --if-not-exists"),
    ("INVALID_CONFIG", "invalid topic config: broker said no"),
    ("GROUP_ID_NOT_FOUND", "group 'g' does not exist"),
    ("NON_EMPTY_GROUP", "group 'g' still has active members"),
    ("LEADER_NOT_AVAILABLE", "has no leader right now"),
    ("_TRANSPORT", "cannot reach broker at b:1"),
    ("SOMETHING_NEW", "broker said no (SOMETHING_NEW)"),
])
def test_explain(name, expected) -> None:
    text = explain(name, "broker said no", topic="orders", group="g", bootstrap="b:1")
    assert expected in text
    assert "\n" not in text


def test_one_line() -> None:
    assert one_line("a\n  b\tc ") == "a b c"


def test_parse_key_value() -> None:
    assert parse_key_value("a=b=c") == ("a", "b=c")
    assert parse_key_value("a=") == ("a", "")
    for bad in ("novalue", "=x", ""):
        with pytest.raises(click.BadParameter):
            parse_key_value(bad)


def test_parse_timestamp() -> None:
    assert parse_timestamp_ms("2024-05-01T12:00:00Z") == 1714564800000
    assert parse_timestamp_ms("2024-05-01T14:00:00+02:00") == 1714564800000
    assert parse_timestamp_ms("2024-05-01T12:00:00.250Z") == 1714564800250
    assert parse_timestamp_ms("1714564800000") == 1714564800000
    local = datetime(2024, 5, 1, 12, 0).astimezone()  # a zone-less time is local time
    assert parse_timestamp_ms("2024-05-01T12:00:00") == int(local.timestamp() * 1000)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp_ms("yesterday")


def test_format_table() -> None:
    assert format_table(["A", "LONGER"], [[1, None], ["xyz", "v"]]).splitlines() == [
        "A    LONGER", "1    -", "xyz  v"]


def test_lag() -> None:
    assert lag(3, 10) == 7
    assert lag(10, 10) == 0
    assert lag(12, 10) == 0  # a commit past a truncated end is not negative lag
    assert lag(None, 10) is None and lag(3, None) is None and lag(-1001, 10) is None


@pytest.mark.parametrize("strategy, kwargs, expected", [
    ("earliest", {}, Reset(0, 5, 2)),
    ("latest", {}, Reset(0, 5, 9)),
    ("offset", {"offset": 4}, Reset(0, 5, 4)),
    ("offset", {"offset": 1}, Reset(0, 5, 2, "1 is before the log start: clamped")),
    ("offset", {"offset": 50}, Reset(0, 5, 9, "50 is past the log end: clamped")),
    ("datetime", {"at_time": 6}, Reset(0, 5, 6)),
    ("datetime", {"at_time": -1}, Reset(0, 5, 9, "no record that recent: moved to the end")),
])
def test_plan_reset(strategy, kwargs, expected) -> None:
    assert plan_reset(strategy, partition=0, earliest=2, latest=9, current=5, **kwargs) == expected


def test_plan_reset_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        plan_reset("offset", partition=0, earliest=0, latest=1, current=None)
    with pytest.raises(ValueError):
        plan_reset("sideways", partition=0, earliest=0, latest=1, current=None)
