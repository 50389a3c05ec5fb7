"""`tidelog bench ...` with small numbers: it runs, cleans up, and reports sane figures.

No speed is asserted (that would depend on the machine); only that the
figures are internally consistent.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.support.cli import assert_clean_failure, cli_broker, run_cli, start_cli, unique  # noqa: F401

SMALL = ["--records", "2000", "--record-size", "100"]


def check_sane(report: dict, *, mode: str, records: int = 2000, latency: bool = True) -> None:
    assert report["mode"] == mode
    assert report["records"] == records and report["errors"] == 0
    assert report["bytes"] == records * report["record_size"]
    assert report["elapsed_s"] > 0 and report["records_per_s"] > 0 and report["mib_per_s"] > 0
    if latency:
        lat = report["latency_ms"]
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    else:
        assert report["latency_ms"] is None


def bench_topics(bootstrap: str) -> list[str]:
    listed = json.loads(run_cli("topic", "list", "-o", "json", bootstrap=bootstrap).out)
    return [t["name"] for t in listed if t["name"].startswith("tidelog-bench-")]


@pytest.mark.parametrize("mode", ["produce", "consume", "e2e"])
def test_bench_json(cli_broker, mode) -> None:
    done = run_cli("bench", mode, *SMALL, "--partitions", "2", "--output", "json", bootstrap=cli_broker.bootstrap)
    assert done.code == 0, str(done)
    report = json.loads(done.out)
    check_sane(report, mode=mode, latency=mode != "consume")
    assert report["settings"]["partitions"] == 2 and report["settings"]["acks"] == "all"
    assert bench_topics(cli_broker.bootstrap) == []  # the temporary topic is gone


def test_bench_table(cli_broker) -> None:
    done = run_cli("bench", "produce", *SMALL, "--acks", "1", "--compression", "zstd", "--linger-ms", "2",
                   "--batch-size", "65536", "--rate", "20000", bootstrap=cli_broker.bootstrap)
    assert done.code == 0, str(done)
    lines = done.out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("records ")))
    names, values = lines[header].split(), lines[header + 1].split()
    assert names == ["records", "records/s", "MiB/s", "p50", "ms", "p95", "ms", "p99", "ms", "max", "ms", "errors"]
    figures = dict(zip(["records", "rate", "mib", "p50", "p95", "p99", "max", "errors"], values))
    assert figures["records"] == "2000" and figures["errors"] == "0"
    assert float(figures["rate"].replace(",", "")) > 0 and float(figures["mib"]) > 0
    p50, p95, p99, top = (float(figures[k]) for k in ("p50", "p95", "p99", "max"))
    assert 0 <= p50 <= p95 <= p99 <= top
    assert "compression=zstd" in lines[0] and "rate=20000/s" in lines[0]


def test_bench_existing_topic(cli_broker) -> None:
    b = cli_broker.bootstrap
    topic = unique("perf")
    assert run_cli("topic", "create", topic, "--partitions", "1", bootstrap=b).code == 0
    produced = run_cli("bench", "produce", "--records", "500", "--record-size", "64", "--topic", topic, "-o", "json",
                       bootstrap=b)
    check_sane(json.loads(produced.out), mode="produce", records=500)
    consumed = run_cli("bench", "consume", "--records", "5000", "--topic", topic, "-o", "json", bootstrap=b)
    report = json.loads(consumed.out)
    check_sane(report, mode="consume", records=500, latency=False)  # only what the topic holds
    assert report["record_size"] == 64
    e2e = run_cli("bench", "e2e", "--records", "300", "--record-size", "64", "--topic", topic, "-o", "json",
                  bootstrap=b)
    check_sane(json.loads(e2e.out), mode="e2e", records=300)
    assert topic in run_cli("topic", "list", bootstrap=b).out  # an existing topic is kept


def test_bench_bad_input(cli_broker) -> None:
    b = cli_broker.bootstrap
    assert_clean_failure(run_cli("bench", "e2e", "--record-size", "8", bootstrap=b), code=2, contains="at least 24")
    assert_clean_failure(run_cli("bench", "produce", "--records", "10", "--topic", unique("none"), bootstrap=b),
                         contains="does not exist")
    assert_clean_failure(run_cli("bench", "produce", "--records", "0", bootstrap=b), code=2)


def test_progress_bar_on_a_terminal(cli_broker) -> None:
    """With stderr on a terminal the live bar is drawn there; stdout keeps only the table."""
    import os
    import pty
    import subprocess
    import sys

    from tests.support.cli import REPO_ROOT, cli_env

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tidelog.cli", "bench", "produce", *SMALL],
                                stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                env=cli_env(cli_broker.bootstrap, TERM="xterm-256color", COLUMNS="120"))
        os.close(slave)
        slave = None
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer has gone
                break
            if not chunk:
                break
            drawn += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert proc.returncode == 0, drawn
    assert b"producing" in drawn and b"\x1b[" in drawn
    assert b"\x1b[" not in out and b"records/s" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_bench_cleans_up(cli_broker, signum) -> None:
    b = cli_broker.bootstrap
    proc = start_cli("bench", "e2e", "--records", "100000", "--rate", "500", "--record-size", "64", bootstrap=b)
    try:
        deadline = time.monotonic() + 30
        while not bench_topics(b):  # started: its temporary topic exists
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert b"Traceback" not in err and b"Traceback" not in out
    assert bench_topics(b) == []
