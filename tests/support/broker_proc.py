"""Run `tidelog serve` as a real subprocess, as users do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .ports import free_port, wait_for_port


class BrokerProcess:
    def __init__(self, *, data_dir: Path | None = None, port: int | None = None, node_id: int = 0,
                 aws: dict | None = None, extra_args: list[str] | None = None, env: dict | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.node_id = node_id
        self.aws = aws
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        args = [sys.executable, "-m", "tidelog.cli", "serve", "--port", str(self.port), "--node-id", str(self.node_id),
                "--log-format", "json", "--flush-interval-ms", "10"]
        if self.aws:
            args += ["--s3-bucket", self.aws["bucket"], "--dynamodb-table", self.aws["table"],
                     "--endpoint-url", self.aws["endpoint_url"], "--region", "us-east-1"]
        else:
            args += ["--data-dir", str(self.data_dir)]
        return args + self.extra_args

    def start(self, timeout: float = 30) -> "BrokerProcess":
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", **self.env}
        fd, name = tempfile.mkstemp(prefix=f"tidelog-broker-{self.port}-", suffix=".log")
        self.log_path = Path(name)
        self._log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(self.args(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(self.port, timeout, alive=lambda: self.proc.poll() is None)
        except Exception:
            self.kill()
            raise RuntimeError(f"broker failed to start:\n{self.logs()[-4000:]}") from None
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"broker ignored SIGTERM:\n{self.logs()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill() if exc[0] else self.stop()
        self._log.close()


# Log messages that mean a broker hit a bug (a handler crashed, an answer could not be encoded).
BUG_MESSAGES = ("request failed", "request task failed", "cannot encode an error response", "Task exception")


def bug_lines(logs: str) -> list[str]:
    """Lines of a broker's JSON log that report a bug, or any traceback."""
    out = []
    for line in logs.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                out.append(line)
            continue
        if any(m in str(entry.get("msg", "")) for m in BUG_MESSAGES) or entry.get("level") == "critical":
            out.append(line[:2000])
    return out
