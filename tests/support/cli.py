"""Run the `tidelog` CLI as a subprocess, as people and their scripts do.

``cli_broker`` is a module-scoped embedded-store broker for the CLI tests
(import it into a test module to use it); the CLI is a client like any other,
so one storage backend is enough here.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from .broker_proc import BrokerProcess
from .ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw_out: bytes

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def cli_env(bootstrap: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIDELOG_BOOTSTRAP", "TIDELOG_DEBUG")}
    if bootstrap:
        env["TIDELOG_BOOTSTRAP"] = bootstrap
    env.update(extra)
    return env


def run_cli(*args: str, bootstrap: str | None = None, stdin: bytes | str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> Result:
    """``tidelog ARGS`` to completion; ``bootstrap`` goes through TIDELOG_BOOTSTRAP."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run([sys.executable, "-m", "tidelog.cli", *args], input=data if data is not None else b"",
                          capture_output=True, timeout=timeout, cwd=REPO_ROOT,
                          env={**cli_env(bootstrap), **(env or {})})
    return Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"),
                  done.stdout)


def start_cli(*args: str, bootstrap: str | None = None) -> subprocess.Popen:
    """``tidelog ARGS`` in the background, stdout/stderr piped (bytes)."""
    return subprocess.Popen([sys.executable, "-m", "tidelog.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT, env=cli_env(bootstrap))


def read_lines(proc: subprocess.Popen, count: int, timeout: float = 30) -> list[bytes]:
    """The next ``count`` lines of a running command's stdout, or fail after ``timeout``.

    Reads the raw pipe (``os.read``): a buffered ``readline`` would pull later
    lines into Python's buffer, where ``select`` cannot see them.
    """
    fd = proc.stdout.fileno()
    pending = getattr(proc, "_pending_out", b"")
    deadline = time.monotonic() + timeout
    while pending.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"wanted {count} lines within {timeout}s, got {pending!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed after {pending!r}; stderr: {proc.stderr.read()!r}")
            pending += chunk
    lines = pending.split(b"\n")
    proc._pending_out = b"\n".join(lines[count:])
    return [line + b"\n" for line in lines[:count]]


def assert_clean_failure(result: Result, *, contains: str | None = None, code: int | None = None,
                         only_line: bool = True) -> str:
    """A failed command: non-zero exit, no traceback, one ``error:`` line, last on stderr.

    ``only_line`` (the default) also demands that stderr holds nothing else.
    """
    assert result.code != 0, str(result)
    if code is not None:
        assert result.code == code, str(result)
    assert "Traceback" not in result.out and "Traceback" not in result.err, str(result)
    lines = result.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], str(result)
    if only_line:
        assert len(lines) == 1, str(result)
    if contains is not None:
        assert contains in errors[0], str(result)
    return errors[0]


def unique(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def dead_bootstrap() -> str:
    """A loopback address where nothing listens (connection refused)."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def cli_broker(tmp_path_factory: pytest.TempPathFactory):
    broker = BrokerProcess(data_dir=tmp_path_factory.mktemp("cli-broker")).start()
    try:
        yield broker
    finally:
        code = broker.stop()
        broker._log.close()
    logs = broker.logs()
    assert code == 0, f"broker exited with {code}:\n{logs[-4000:]}"
    assert "Traceback" not in logs, logs[-4000:]
