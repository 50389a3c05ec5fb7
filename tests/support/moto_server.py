"""A moto S3/DynamoDB endpoint that is linearizable, run as a subprocess.

moto's own server handles requests on many threads against shared in-memory
backends without locking, so concurrent compare-and-set requests can lose
updates (see FACTS.md).  Tidelog's correctness rests on conditional writes
being atomic, so this server serialises request handling with one global
lock held while the whole response is built.  Throughput is unchanged in
practice: moto holds the GIL for nearly all of its work anyway.

It runs in a subprocess rather than a thread so the test process's event
loops, signal handlers and GIL are not shared with moto, and so a wedged
server can be killed.

Run it directly with ``python -m tests.support.moto_server --port N``; it
prints one ``ready`` line to stdout and exits cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PARENT_POLL_S = 1.0


class SerializedApp:
    """WSGI wrapper that runs one request at a time, response body included.

    The inner iterable is consumed (and closed) inside the lock because moto
    may still touch backend state while producing it; only the finished bytes
    leave the critical section.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"], captured["exc_info"] = status, headers, exc_info
            return written.append

        with self._lock:
            result = self._app(environ, capture)
            try:
                body = written + list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        start_response(captured["status"], captured["headers"], captured["exc_info"])
        return body


def build_app() -> SerializedApp:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return SerializedApp(DomainDispatcherApplication(create_backend_app))


def _quiet_handler() -> type:
    """moto's request handler without per-request access logging (thousands of lines per test run)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    return QuietHandler


def serve(host: str, port: int, *, exit_with_parent: bool = False) -> None:
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(port))
    server = make_server(host, port, build_app(), threaded=True, request_handler=_quiet_handler())
    stop = threading.Event()
    # serve_forever runs on a worker thread so the main thread can wait for a
    # signal and call shutdown(), which would deadlock if called from the
    # thread running serve_forever.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(), stop), name="moto-parent", daemon=True).start()
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="moto-serve", daemon=True)
    worker.start()
    bound_host, bound_port = server.server_address[:2]
    print(f"moto server ready url=http://{bound_host}:{bound_port}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    worker.join(timeout=STOP_TIMEOUT_S)


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Stop when the parent dies (we get re-parented), even if it was killed and ran no atexit hooks."""
    while not stop.wait(PARENT_POLL_S):
        if os.getppid() != parent:
            stop.set()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """Starts the serialised moto server in a subprocess and cleans it up.

    ``start`` returns the endpoint URL.  The subprocess is terminated by
    ``stop``, by the context manager and at interpreter exit, and it exits by
    itself within a second if this process dies without cleaning up, so it
    never outlives the test session.
    """

    def __init__(self, port: int | None = None) -> None:
        self._requested_port = port
        self.port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self.returncode: int | None = None  # the subprocess's exit status once stopped

    @property
    def url(self) -> str:
        if self.port is None or self._proc is None:
            raise RuntimeError("moto server is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        if self._proc is not None:
            return self.url
        # An auto-picked port can be taken between probing and binding; a
        # couple of fresh picks make that race harmless.
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            self.port = self._requested_port or free_port()
            try:
                self._launch()
                return self.url
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        assert self.port is not None
        self._stderr = tempfile.TemporaryFile()
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", "--port", str(self.port), "--exit-with-parent"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                detail = self._read_stderr()
                code = self._proc.returncode
                self._discard()
                raise RuntimeError(f"moto server exited during start-up code={code} port={self.port}\n{detail}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                detail = self._read_stderr()
                self.stop()
                raise RuntimeError(f"moto server did not answer in time timeout_s={START_TIMEOUT_S}\n{detail}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/moto-api/", timeout=1) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except OSError:
            return False

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def _discard(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = None
        self._proc = None
        atexit.unregister(self.stop)

    def reset(self) -> None:
        """Forget every bucket, table and object (moto's reset API)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode
        self._discard()

    def __enter__(self) -> "MotoServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto S3/DynamoDB server with linearizable request handling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (see the ready line)")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the launching process dies")
    args = parser.parse_args(argv)
    serve(args.host, args.port, exit_with_parent=args.exit_with_parent)


if __name__ == "__main__":
    main()
