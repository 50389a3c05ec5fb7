"""The CLI's record text formats: produce input and consume output agree, for any bytes."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.cli.record_format import (InputError, OutgoingRecord, parse_json, parse_plain, record_to_json,
                                       record_to_plain)

maybe_bytes = st.none() | st.binary(max_size=64)
header = st.tuples(st.text(max_size=8), maybe_bytes)


@given(key=maybe_bytes, value=maybe_bytes, headers=st.lists(header, max_size=4),
       partition=st.integers(0, 1000), timestamp=st.none() | st.integers(0, 2**50))
def test_consume_json_feeds_produce_json_exactly(key, value, headers, partition, timestamp) -> None:
    line = record_to_json(topic="t", partition=partition, offset=7, timestamp=timestamp, timestamp_type=1,
                          key=key, value=value, headers=headers)
    assert "\n" not in line
    back = parse_json(line.encode())
    assert back == OutgoingRecord(value=value, key=key, headers=list(headers), partition=partition,
                                  timestamp=timestamp)


def test_non_utf8_is_base64_with_a_marker() -> None:
    raw = b"\xff\x00ok"
    obj = json.loads(record_to_json(topic="t", partition=0, offset=1, timestamp=5, timestamp_type=2, key=b"k",
                                    value=raw, headers=[("h", raw), ("n", None)]))
    assert obj["value"] == base64.b64encode(raw).decode() and obj["value_encoding"] == "base64"
    assert obj["key"] == "k" and "key_encoding" not in obj
    assert obj["headers"] == [{"key": "h", "value": base64.b64encode(raw).decode(), "encoding": "base64"},
                              {"key": "n", "value": None}]
    assert obj["timestamp_type"] == "LogAppendTime"


def test_text_that_looks_like_base64_stays_text() -> None:
    obj = json.loads(record_to_json(topic="t", partition=0, offset=1, timestamp=None, timestamp_type=0, key=None,
                                    value=b"aGVsbG8=", headers=[]))
    assert obj["value"] == "aGVsbG8=" and "value_encoding" not in obj
    assert obj["timestamp"] is None and obj["timestamp_type"] is None


@pytest.mark.parametrize("line, key, sep, expected", [
    (b"hello\n", None, None, OutgoingRecord(b"hello")),
    (b"hello\r\n", b"k", None, OutgoingRecord(b"hello", key=b"k")),
    (b"\n", None, None, OutgoingRecord(b"")),
    (b"last-line-without-newline", None, None, OutgoingRecord(b"last-line-without-newline")),
    (b"k:v:w\n", None, b":", OutgoingRecord(b"v:w", key=b"k")),
    (b":v\n", None, b":", OutgoingRecord(b"v", key=b"")),
    (b"k=>v\n", None, b"=>", OutgoingRecord(b"v", key=b"k")),
])
def test_plain_lines(line, key, sep, expected) -> None:
    assert parse_plain(line, key=key, key_separator=sep) == expected


def test_plain_line_without_separator_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no key separator"):
        parse_plain(b"nokey\n", key_separator=b":")


def test_json_shorthands() -> None:
    assert parse_json(b'{"value": {"a": [1, 2]}, "key": 42}') == OutgoingRecord(b'{"a":[1,2]}', key=b"42")
    assert parse_json(b'{"value": "v", "headers": {"a": "1", "b": null}}').headers == [("a", b"1"), ("b", None)]
    assert parse_json(b'{"value": "v", "headers": [["a", "1"], ["a", "2"]]}').headers == [("a", b"1"), ("a", b"2")]
    assert parse_json(b"   \n") is None
    assert parse_json(b'{"value": null}') == OutgoingRecord(None)


@pytest.mark.parametrize("line, message", [
    (b"{nope", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"valeu": "x"}', "unknown field 'valeu'"),
    (b'{"value": "x", "partition": -1}', "partition must be a non-negative integer"),
    (b'{"value": "x", "partition": true}', "partition must be a non-negative integer"),
    (b'{"value": "x", "timestamp": "today"}', "timestamp must be epoch milliseconds"),
    (b'{"value": "%%%", "value_encoding": "base64"}', "value is not valid base64"),
    (b'{"value": "x", "value_encoding": "hex"}', "value_encoding must be"),
    (b'{"value": "x", "headers": "h=1"}', "headers must be an object or a list"),
    (b'{"value": "x", "headers": [{"value": "1"}]}', "each header needs a string key"),
    (b'{"value": "x", "headers": {"h": 1}}', "value must be a string or null"),
    (b'\xff\xfe{}', "invalid JSON"),
])
def test_json_input_errors_say_what_is_wrong(line, message) -> None:
    with pytest.raises(InputError, match=message):
        parse_json(line)


def test_plain_output() -> None:
    assert record_to_plain(b"k", b"v") == b"v\n"
    assert record_to_plain(None, None) == b"\n"
    assert record_to_plain(b"k", b"v", b"\t") == b"k\tv\n"
    assert record_to_plain(None, b"v", b":") == b":v\n"
