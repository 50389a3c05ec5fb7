"""Real brokers for the end-to-end suite, on both storage backends.

Every test here talks to a ``tidelog serve`` subprocess over TCP, exactly as
users do.  ``backend`` is parametrised over the embedded store (a data
directory) and S3 + DynamoDB (one moto server per session, behind a global
request lock, with a fresh bucket and table per broker created by running
``tidelog init`` as a subprocess first).

``broker`` is shared by every test of a module (per backend); tests that
restart or kill brokers use ``brokers``, a factory that starts brokers for
one test and can restart them on the same storage.  Every process started
here is stopped at teardown, and a broker that does not exit cleanly on
SIGTERM, or that logged an unexpected traceback, fails the test that owned it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Iterator

import pytest

with warnings.catch_warnings():
    # kafka-python reads its bundled protocol schemas with importlib.resources.read_text
    # (deprecated on 3.11) while its modules import; importing them here, once, keeps that
    # warning out of the tests, where warnings are errors.  broker/wire.py does the same.
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated", category=DeprecationWarning)
    import aiokafka  # noqa: F401
    import kafka  # noqa: F401
    import kafka.admin  # noqa: F401

from tests.support.broker_proc import BrokerProcess, bug_lines

REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]

BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("aws", id="aws", marks=pytest.mark.aws),
]

_FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
# A developer's real session must never reach moto (or AWS).
_CLEARED_AWS_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")

# Log lines that mean a broker bug rather than a refused client: an exception
# escaped a handler, a response could not be encoded, or a task died.


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_AWS_ENV}
    env.update(_FAKE_AWS_ENV)
    return env


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One serialised moto server for the whole session, started only if an aws test runs."""
    from tests.support.moto_server import MotoServer

    server = MotoServer()
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


class Storage:
    """Where one broker (and its restarts) keeps its data."""

    def __init__(self, backend: str, tmp: Path, moto_url: str | None) -> None:
        self.backend = backend
        self.data_dir: Path | None = None
        self.aws: dict | None = None
        if backend == "embedded":
            self.data_dir = tmp / f"data-{uuid.uuid4().hex[:8]}"
        else:
            name = f"tidelog-e2e-{uuid.uuid4().hex}"[:63]
            self.aws = {"bucket": name, "table": name, "endpoint_url": moto_url}
            self._init()

    def _init(self) -> None:
        args = [sys.executable, "-m", "tidelog.cli", "init", "--s3-bucket", self.aws["bucket"],
                "--dynamodb-table", self.aws["table"], "--endpoint-url", self.aws["endpoint_url"], "--region", REGION]
        done = subprocess.run(args, env=_subprocess_env(), capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"tidelog init failed: {done.stdout}{done.stderr}")


class Brokers:
    """Starts brokers on a backend and guarantees none outlives its owner."""

    def __init__(self, backend: str, tmp: Path, moto_url: str | None) -> None:
        self.backend = backend
        self.tmp = tmp
        self.moto_url = moto_url
        self.started: list[BrokerProcess] = []

    def storage(self) -> Storage:
        return Storage(self.backend, self.tmp, self.moto_url)

    def start(self, storage: Storage | None = None, *, port: int | None = None,
              extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> BrokerProcess:
        """A running broker; ``env`` adds ``TIDELOG_*`` settings that have no CLI flag."""
        storage = storage or self.storage()
        proc = BrokerProcess(data_dir=storage.data_dir, aws=storage.aws, port=port, extra_args=extra_args or [],
                             env={**{k: v for k, v in _subprocess_env().items() if k.startswith("AWS_")},
                                  **(env or {})})
        proc.storage = storage
        try:
            proc.start()
        except BaseException:
            proc._log.close()  # start() already killed it and put its log in the error
            raise
        self.started.append(proc)
        return proc

    def restart(self, old: BrokerProcess, *, extra_args: list[str] | None = None) -> BrokerProcess:
        """A new broker process on ``old``'s port and storage (``old`` must have exited)."""
        assert old.proc is not None and old.proc.poll() is not None, "stop or kill the old broker first"
        return self.start(old.storage, port=old.port, extra_args=old.extra_args if extra_args is None else extra_args,
                          env={k: v for k, v in old.env.items() if k.startswith("TIDELOG_")})

    def close(self) -> list[str]:
        """Stop every broker still running; returns the problems found (unclean exits, logged bugs)."""
        problems = []
        for proc in self.started:
            try:
                if proc.proc is not None and proc.proc.poll() is None:
                    code = proc.stop()
                    if code != 0:
                        problems.append(f"broker on port {proc.port} exited with {code} after SIGTERM")
            except RuntimeError as exc:
                problems.append(str(exc))
            finally:
                proc.kill()
                proc._log.close()
            problems += [f"broker on port {proc.port} logged: {line}" for line in bug_lines(proc.logs())]
        self.started.clear()
        return problems




def _brokers_for(request: pytest.FixtureRequest, backend: str, tmp: Path) -> Brokers:
    url = request.getfixturevalue("moto_url") if backend == "aws" else None
    return Brokers(backend, tmp, url)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def module_brokers(request: pytest.FixtureRequest, backend: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    brokers = _brokers_for(request, backend, tmp_path_factory.mktemp(f"e2e-{backend}"))
    try:
        yield brokers
    finally:
        problems = brokers.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def broker(module_brokers: Brokers) -> BrokerProcess:
    """One broker shared by every test of the module (per backend)."""
    return module_brokers.start()


@pytest.fixture
def brokers(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Brokers]:
    """A broker factory for one test (restarts, crashes, special flags)."""
    factory = _brokers_for(request, backend, tmp_path)
    try:
        yield factory
    finally:
        problems = factory.close()
    assert not problems, "\n".join(problems)
