"""How records look as lines of text: produce input and consume output.

Pure functions, no client import.  The JSON shape is the same in both
directions, so ``tidelog consume A -o json | tidelog produce B --json`` copies
records byte for byte.

JSON record (one object per line)::

    {"topic": "orders", "partition": 0, "offset": 42,
     "timestamp": 1714564800000, "timestamp_type": "CreateTime",
     "key": "user-1", "value": "{\\"total\\": 12}",
     "headers": [{"key": "trace", "value": "abc"}]}

Bytes that are not valid UTF-8 cannot be a JSON string.  Such a key or value
is written as base64 and flagged with a sibling field ``"key_encoding":
"base64"`` / ``"value_encoding": "base64"``; a header value gets
``"encoding": "base64"`` inside its own object.  Without a flag a string is
UTF-8 text.  ``null`` is a Kafka null (a tombstone value, a record without a
key); ``""`` is an empty byte string.

Produce accepts the same objects (``topic``, ``offset`` and
``timestamp_type`` are ignored, so consume output can be replayed), plus some
shorthands: a ``value`` that is not a string (an object, a number) is sent as
its compact JSON text; ``headers`` may also be ``{"k": "v"}`` or
``[["k", "v"]]``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

BASE64 = "base64"
TIMESTAMP_TYPES = {1: "CreateTime", 2: "LogAppendTime"}
_IGNORED = {"topic", "offset", "timestamp_type"}
_ALLOWED = {"key", "value", "headers", "partition", "timestamp", "key_encoding", "value_encoding"} | _IGNORED


class InputError(ValueError):
    """One input line could not become a record; the message says why."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    partition: int | None = None
    timestamp: int | None = None


# -- produce: text lines in ------------------------------------------------

def strip_newline(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def parse_plain(line: bytes, *, key: bytes | None = None, key_separator: bytes | None = None) -> OutgoingRecord:
    """A raw line: the whole line is the value, or ``key SEP value`` split at the first SEP."""
    line = strip_newline(line)
    if key_separator:
        k, sep, v = line.partition(key_separator)
        if not sep:
            raise InputError(f"no key separator {key_separator.decode(errors='replace')!r} in line")
        return OutgoingRecord(value=v, key=k)
    return OutgoingRecord(value=line, key=key)


def parse_json(line: bytes) -> OutgoingRecord | None:
    """A JSON object line (see the module docstring); ``None`` for a blank line."""
    text = line.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"invalid JSON: {reason}{where}") from None
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _ALLOWED)
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} (fields: key, value, headers, partition, timestamp)")
    partition = obj.get("partition")
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
        raise InputError("partition must be a non-negative integer")
    timestamp = obj.get("timestamp")
    if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0):
        raise InputError("timestamp must be epoch milliseconds (a non-negative integer)")
    return OutgoingRecord(value=_field_bytes(obj, "value"), key=_field_bytes(obj, "key"),
                          headers=_headers(obj.get("headers")), partition=partition, timestamp=timestamp)


def _field_bytes(obj: dict, name: str) -> bytes | None:
    value = obj.get(name)
    encoding = obj.get(f"{name}_encoding")
    if encoding not in (None, BASE64):
        raise InputError(f"{name}_encoding must be \"base64\" when given")
    if value is None:
        return None
    if encoding == BASE64:
        return _unbase64(value, name)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _unbase64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{what} marked base64 must be a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not valid base64") from None


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        items = [{"key": k, "value": v} for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [{"key": h[0], "value": h[1]} if isinstance(h, list) and len(h) == 2 else h for h in raw]
    else:
        raise InputError("headers must be an object or a list")
    out = []
    for h in items:
        if not isinstance(h, dict) or not isinstance(h.get("key"), str):
            raise InputError("each header needs a string key")
        value, encoding = h.get("value"), h.get("encoding")
        if encoding not in (None, BASE64):
            raise InputError("header encoding must be \"base64\" when given")
        if value is None:
            out.append((h["key"], None))
        elif encoding == BASE64:
            out.append((h["key"], _unbase64(value, f"header {h['key']!r}")))
        elif isinstance(value, str):
            out.append((h["key"], value.encode()))
        else:
            raise InputError(f"header {h['key']!r} value must be a string or null")
    return out


# -- consume: records out ----------------------------------------------------

def _text_or_base64(data: bytes | None) -> tuple[str | None, bool]:
    if data is None:
        return None, False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def record_to_json(*, topic: str, partition: int, offset: int, timestamp: int | None, timestamp_type: int | None,
                   key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]] | None) -> str:
    """One consumed record as one line of JSON (see the module docstring)."""
    obj: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp,
                           "timestamp_type": TIMESTAMP_TYPES.get(timestamp_type) if timestamp is not None else None}
    for name, data in (("key", key), ("value", value)):
        text, encoded = _text_or_base64(data)
        obj[name] = text
        if encoded:
            obj[f"{name}_encoding"] = BASE64
    out_headers = []
    for hkey, hvalue in headers or []:
        text, encoded = _text_or_base64(hvalue)
        item: dict[str, Any] = {"key": hkey, "value": text}
        if encoded:
            item["encoding"] = BASE64
        out_headers.append(item)
    obj["headers"] = out_headers
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def record_to_plain(key: bytes | None, value: bytes | None, key_separator: bytes | None = None) -> bytes:
    """The value (kcat's default), optionally prefixed by ``key SEP``; null prints as empty."""
    body = value or b""
    if key_separator is not None:
        return (key or b"") + key_separator + body + b"\n"
    return body + b"\n"
