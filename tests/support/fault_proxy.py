"""An HTTP proxy between brokers and moto that injects S3 and DynamoDB faults.

moto never throttles, never loses a reply and never stalls, so the paths
that handle those (retries, ambiguous commits, void markers, orphaned
objects) would go untested.  Brokers get ``--endpoint-url`` pointing here;
every request is classified (service and AWS operation name), matched
against the current rules, and then forwarded to moto or not.

Actions a rule can take on a matching request:

``latency``     sleep ``latency_ms`` before forwarding (the request still succeeds);
``error``       answer without forwarding: S3 gets ``503 SlowDown`` (XML), DynamoDB
                gets ``503 ServiceUnavailableException`` (JSON) — both retriable
                for botocore, and neither reaches moto;
``reset``       close the client socket before forwarding (a connection error:
                nothing was applied);
``drop_reply``  forward, let moto apply the request, read its answer, then close
                the client socket without sending it (an *ambiguous* outcome).

Rules are plain dicts (see `Rule`) and can change at runtime, in-process
(``proxy.set_rules([...])``) or over HTTP on the proxy's own port::

    POST   /__faults   {"rules": [...]}   replace the rules
    GET    /__faults                      rules, per-rule counters, request totals
    DELETE /__faults                      remove every rule

Everything the proxy did is counted (``proxy.fired("name")``), so a test can
assert that its faults actually happened instead of passing vacuously.
Decisions use a seeded random source, one draw per matching rule.

Run standalone with ``python -m tests.support.fault_proxy --upstream URL
--port N``; it prints one ``ready`` line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

CONTROL_PATH = "/__faults"
ACTIONS = ("latency", "error", "reset", "drop_reply")
SERVICES = ("s3", "dynamodb", "*")
# Hop-by-hop headers (RFC 9110 §7.6.1) and those the proxy recomputes.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                          "upgrade", "expect", "content-length"})


@dataclass
class Rule:
    """One fault rule.  ``operation`` is an AWS operation name (``PutObject``,
    ``TransactWriteItems``) or ``*``; ``path_contains`` narrows S3 requests to
    keys containing a substring (e.g. ``/ingest/``) and ``body_contains`` to
    requests whose body contains one (e.g. one broker session's commit-log
    key ``log#0-1``).  ``every`` fires on every n-th matching request instead
    of at random (``every=20`` is exactly 5%, and certain to fire once 20
    requests matched).  ``max_count`` caps how often the rule fires (None:
    unlimited)."""

    action: str
    service: str = "*"
    operation: str | list[str] = "*"
    probability: float = 1.0
    latency_ms: int = 0
    path_contains: str | None = None
    body_contains: str | None = None
    every: int | None = None
    max_count: int | None = None
    name: str = ""
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; use one of {ACTIONS}")
        if self.service not in SERVICES:
            raise ValueError(f"unknown service {self.service!r}; use one of {SERVICES}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be a positive count")
        if not self.name:
            self.name = f"{self.action}:{self.service}:{self.operation}"

    def matches(self, service: str, operation: str, path: str, body: bytes = b"") -> bool:
        if self.service != "*" and self.service != service:
            return False
        ops = [self.operation] if isinstance(self.operation, str) else list(self.operation)
        if "*" not in ops and operation not in ops:
            return False
        if self.body_contains is not None and self.body_contains.encode() not in body:
            return False
        return self.path_contains is None or self.path_contains in path


def classify(method: str, path: str, headers: Any) -> tuple[str, str]:
    """(service, AWS operation name) of a request to an S3/DynamoDB endpoint with path-style buckets."""
    target = headers.get("X-Amz-Target") or ""
    if target.startswith("DynamoDB_"):
        return "dynamodb", target.split(".", 1)[-1]
    parts = urlsplit(path)
    if parts.path.startswith("/moto-api"):
        return "moto", parts.path
    query = parse_qs(parts.query, keep_blank_values=True)
    segments = [s for s in parts.path.split("/") if s]
    on_key = len(segments) >= 2
    if method == "PUT":
        if not on_key:
            return "s3", "CreateBucket"
        if "uploadId" in query and "partNumber" in query:
            return "s3", "UploadPart"
        if headers.get("x-amz-copy-source"):
            return "s3", "CopyObject"
        return "s3", "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "s3", "CreateMultipartUpload"
        if "uploadId" in query:
            return "s3", "CompleteMultipartUpload"
        if "delete" in query:
            return "s3", "DeleteObjects"
        return "s3", "Post"
    if method == "GET":
        if not on_key:
            return "s3", "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        return "s3", "GetObject"
    if method == "HEAD":
        return "s3", "HeadObject" if on_key else "HeadBucket"
    if method == "DELETE":
        if "uploadId" in query:
            return "s3", "AbortMultipartUpload"
        return "s3", "DeleteObject" if on_key else "DeleteBucket"
    return "s3", method


def _error_reply(service: str) -> tuple[int, dict[str, str], bytes]:
    request_id = uuid.uuid4().hex.upper()[:16]
    if service == "dynamodb":
        body = json.dumps({"__type": "com.amazon.coral.availability#ServiceUnavailableException",
                           "message": "injected by tidelog fault proxy"}).encode()
        return 503, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}, body
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
            "<Message>Please reduce your request rate.</Message>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()
    return 503, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, body


class FaultProxy:
    """The proxy server: ``start()`` returns its URL; rules change with ``set_rules``."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._rng = random.Random(seed)
        self.requests: Counter[str] = Counter()  # "service:operation" -> requests seen
        self.actions: Counter[str] = Counter()  # "action:service:operation" -> faults injected
        self._fired_total: Counter[str] = Counter()  # rule name -> times fired, across rule changes
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- rules -------------------------------------------------------------------
    def set_rules(self, rules: Iterable[Rule | dict]) -> None:
        built = [r if isinstance(r, Rule) else Rule(**r) for r in rules]
        with self._lock:
            self._rules = built

    def add_rule(self, rule: Rule | dict) -> Rule:
        built = rule if isinstance(rule, Rule) else Rule(**rule)
        with self._lock:
            self._rules = [*self._rules, built]
        return built

    def clear(self) -> None:
        self.set_rules([])

    def fired(self, name: str) -> int:
        """How often the rule named ``name`` fired (rules that were replaced keep their count here)."""
        with self._lock:
            return self._fired_total.get(name, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [asdict(r) for r in self._rules], "fired": dict(self._fired_total),
                    "requests": dict(self.requests), "actions": dict(self.actions)}

    def decide(self, service: str, operation: str, path: str, body: bytes = b"") -> list[Rule]:
        """The rules that fire for this request, each counted once (thread-safe)."""
        fired = []
        with self._lock:
            self.requests[f"{service}:{operation}"] += 1
            for rule in self._rules:
                if not rule.matches(service, operation, path, body):
                    continue
                rule.matched += 1
                if rule.max_count is not None and rule.fired >= rule.max_count:
                    continue
                if rule.every is not None:
                    if rule.matched % rule.every:
                        continue
                elif rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                self._fired_total[rule.name] += 1
                self.actions[f"{rule.action}:{service}:{operation}"] += 1
                fired.append(rule)
        return fired


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
        _upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except ConnectionError:
                pass  # a client (a killed broker, or one we reset on purpose) went away

        def do_GET(self) -> None:
            self._handle()

        do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_GET

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            try:
                self._proxy_one()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (e.g. its broker was killed)

        def _proxy_one(self) -> None:
            body = self._read_body()
            if urlsplit(self.path).path == CONTROL_PATH:
                self._control(body)
                return
            service, operation = classify(self.command, self.path, self.headers)
            rules = proxy.decide(service, operation, self.path, body) if service != "moto" else []
            actions = {r.action: r for r in rules}
            if "latency" in actions:
                time.sleep(max(r.latency_ms for r in rules if r.action == "latency") / 1000)
            if "reset" in actions:
                self._abort()
                return
            if "error" in actions:
                self._reply(*_error_reply(service))
                return
            try:
                status, headers, payload = self._forward(body)
            except OSError:
                self._abort()
                return
            if "drop_reply" in actions:
                self._abort()
                return
            self._reply(status, headers, payload)

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            headers["Content-Length"] = str(len(body))
            for attempt in range(2):
                if self._upstream is None:
                    self._upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    self._upstream.request(self.command, self.path, body=body, headers=headers)
                    response = self._upstream.getresponse()
                    payload = response.read()
                    return response.status, response.getheaders(), payload
                except (http.client.HTTPException, OSError):
                    # A stale keep-alive connection to moto: reconnect once.  Only
                    # connection-level failures get here, before moto answered.
                    self._upstream.close()
                    self._upstream = None
                    if attempt == 1:
                        raise
            raise AssertionError("unreachable")

        def _reply(self, status: int, headers: list[tuple[str, str]] | dict[str, str], payload: bytes) -> None:
            items = headers.items() if isinstance(headers, dict) else headers
            self.send_response_only(status)
            length = None
            for name, value in items:
                lower = name.lower()
                if lower == "content-length" and self.command == "HEAD":
                    length = value  # HEAD reports the object's size with no body
                if lower in _HOP_HEADERS:
                    continue
                self.send_header(name, value)
            self.send_header("Content-Length", length if length is not None else str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()

        def _abort(self) -> None:
            """Close the client connection at once, with a reset, sending nothing."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass

        def _control(self, body: bytes) -> None:
            if self.command == "POST":
                try:
                    proxy.set_rules(json.loads(body or b"{}").get("rules", []))
                except (ValueError, TypeError) as exc:
                    self._reply(400, {"Content-Type": "application/json"}, json.dumps({"error": str(exc)}).encode())
                    return
            elif self.command == "DELETE":
                proxy.clear()
            elif self.command != "GET":
                self._reply(405, {}, b"")
                return
            self._reply(200, {"Content-Type": "application/json"}, json.dumps(proxy.snapshot()).encode())

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                if self._upstream is not None:
                    self._upstream.close()

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fault-injecting HTTP proxy for S3/DynamoDB endpoints")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, host=args.host, port=args.port, seed=args.seed)
    proxy.start()
    print(f"fault proxy ready url={proxy.url} upstream={args.upstream}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
