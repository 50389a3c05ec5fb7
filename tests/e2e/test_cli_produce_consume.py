"""`tidelog produce` and `tidelog consume` against a real broker, run as subprocesses."""

from __future__ import annotations

import base64
import json
import signal
import time
from datetime import datetime, timezone

import pytest

from tests.support.cli import (assert_clean_failure, cli_broker, read_lines, run_cli, start_cli,  # noqa: F401
                               unique)


@pytest.fixture
def topic(cli_broker) -> str:
    name = unique("pc")
    done = run_cli("topic", "create", name, "--partitions", "2", bootstrap=cli_broker.bootstrap)
    assert done.code == 0, str(done)
    return name


def consume_json(bootstrap: str, topic: str, count: int) -> list[dict]:
    """Exactly ``count`` records from the beginning (a bounded wait, not an idle timeout)."""
    done = run_cli("consume", topic, "--from-beginning", "--max-messages", str(count), "--timeout", "15",
                   "-o", "json", bootstrap=bootstrap)
    assert done.code == 0, str(done)
    records = [json.loads(line) for line in done.out.splitlines()]
    assert len(records) == count, str(done)
    return records


def test_plain_lines_round_trip(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    produced = run_cli("produce", topic, "--partition", "0", bootstrap=b, stdin="one\ntwo\n\nthree\n")
    assert produced.code == 0, str(produced)
    assert produced.out.strip() == f"delivered 4 records to {topic}"

    consumed = run_cli("consume", topic, "--from-beginning", "--max-messages", "4", bootstrap=b)
    assert consumed.code == 0, str(consumed)
    assert consumed.out == "one\ntwo\n\nthree\n"
    assert "consumed 4 records" in consumed.err


def test_keys_headers_and_partition(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    done = run_cli("produce", topic, "--key-separator", ":", "--header", "source=cli", "--header", "v=1",
                   "--partition", "1", bootstrap=b, stdin="k1:hello:world\nk2:bye\n")
    assert done.code == 0, str(done)
    records = consume_json(b, topic, 2)
    assert [(r["partition"], r["offset"], r["key"], r["value"]) for r in records] == \
        [(1, 0, "k1", "hello:world"), (1, 1, "k2", "bye")]
    assert records[0]["headers"] == [{"key": "source", "value": "cli"}, {"key": "v", "value": "1"}]
    assert records[0]["timestamp_type"] == "CreateTime" and records[0]["timestamp"] > 0

    fixed = run_cli("produce", topic, "--key", "same", bootstrap=b, stdin="a\nb\n")
    assert fixed.code == 0, str(fixed)
    by_key = [r for r in consume_json(b, topic, 4) if r["key"] == "same"]
    assert len(by_key) == 2 and len({r["partition"] for r in by_key}) == 1  # one key, one partition

    plain = run_cli("consume", topic, "--from-beginning", "--partition", "1", "--max-messages", "2",
                    "--key-separator", "=", bootstrap=b)
    assert plain.out.splitlines() == ["k1=hello:world", "k2=bye"], str(plain)


def test_json_input_binary_safe_and_copyable(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    binary = bytes([0xFF, 0x00, 0xC3, 0x28])  # not UTF-8
    lines = [
        {"key": "k", "value": {"total": 12}, "headers": {"h": "x"}},
        {"key": None, "value": base64.b64encode(binary).decode(), "value_encoding": "base64", "partition": 1,
         "headers": [{"key": "bin", "value": base64.b64encode(binary).decode(), "encoding": "base64"}]},
        {"key": "tomb", "value": None, "partition": 0, "timestamp": 1_700_000_000_000},
        {"key": "ünï", "value": "ça va ✓", "partition": 0},
    ]
    done = run_cli("produce", topic, "--json", bootstrap=b, stdin="\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert done.code == 0, str(done)
    assert done.out.strip() == f"delivered 4 records to {topic}"

    records = {r["key"]: r for r in consume_json(b, topic, 4)}
    assert records["k"]["value"] == '{"total":12}' and records["k"]["headers"] == [{"key": "h", "value": "x"}]
    raw = records[None]
    assert raw["value_encoding"] == "base64" and base64.b64decode(raw["value"]) == binary
    assert raw["headers"] == [{"key": "bin", "value": base64.b64encode(binary).decode(), "encoding": "base64"}]
    assert records["tomb"]["value"] is None and records["tomb"]["timestamp"] == 1_700_000_000_000
    assert records["ünï"]["value"] == "ça va ✓" and "value_encoding" not in records["ünï"]

    # consume -o json output feeds produce --json: a byte-exact copy.
    copy = unique("copy")
    assert run_cli("topic", "create", copy, "--partitions", "2", bootstrap=b).code == 0
    dump = run_cli("consume", topic, "--from-beginning", "--max-messages", "4", "-o", "json", bootstrap=b)
    replay = run_cli("produce", copy, "--json", bootstrap=b, stdin=dump.raw_out)
    assert replay.code == 0, str(replay)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("topic", "timestamp")}  # noqa: E731
    original = sorted((strip(r) for r in json.loads(f"[{','.join(dump.out.splitlines())}]")),
                      key=lambda r: (r["partition"], r["offset"]))
    copied = sorted((strip(r) for r in consume_json(b, copy, 4)), key=lambda r: (r["partition"], r["offset"]))
    assert copied == original


def test_bad_lines_are_reported_and_the_rest_delivered(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    one_bad = run_cli("produce", topic, "--json", bootstrap=b, stdin='{"value": "ok"}\n{"value": \n{"value": "ok2"}\n')
    error = assert_clean_failure(one_bad, contains="line 2: invalid JSON")
    assert "1 of 3 records failed" in error
    assert one_bad.out.strip() == f"delivered 2 records to {topic}"

    several = run_cli("produce", topic, "--json", bootstrap=b,
                      stdin='[1]\n{"value": "fine"}\n{"vale": "typo"}\n{"value": "x", "partition": 9}\n')
    assert_clean_failure(several, contains="3 of 4 records failed (lines 1, 3, 4", only_line=False)
    assert "line 1: expected a JSON object" in several.err
    assert "line 3: unknown field 'vale'" in several.err
    assert "line 4: partition 9 does not exist" in several.err

    no_sep = run_cli("produce", topic, "-K", ":", bootstrap=b, stdin="a:1\nnope\n")
    assert_clean_failure(no_sep, contains="line 2: no key separator")


def test_compression_and_acks(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    expected = []
    for compression, acks in (("gzip", "1"), ("snappy", "all"), ("lz4", "1"), ("zstd", "all")):
        values = [f"{compression}-{i}-" + "x" * 200 for i in range(50)]
        done = run_cli("produce", topic, "--compression", compression, "--acks", acks, "--partition", "0",
                       bootstrap=b, stdin="\n".join(values) + "\n")
        assert done.code == 0, str(done)
        expected += values
    got = run_cli("consume", topic, "--from-beginning", "--partition", "0", "--max-messages", "200", bootstrap=b)
    assert got.out.splitlines() == expected


def test_acks_zero_and_file_input(cli_broker, topic, tmp_path) -> None:
    b = cli_broker.bootstrap
    source = tmp_path / "events.txt"
    source.write_text("".join(f"event-{i}\n" for i in range(200)))
    done = run_cli("produce", topic, "--file", str(source), "--acks", "0", bootstrap=b)
    assert done.code == 0, str(done)
    assert done.out.strip() == f"delivered 200 records to {topic}"
    assert "\x1b[" not in done.err  # no progress bar when stderr is not a terminal
    got = run_cli("consume", topic, "--from-beginning", "--max-messages", "200", bootstrap=b)
    assert sorted(got.out.splitlines()) == sorted(f"event-{i}" for i in range(200))


def test_start_positions(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    first = run_cli("produce", topic, "--partition", "0", bootstrap=b, stdin="".join(f"r{i}\n" for i in range(10)))
    assert first.code == 0, str(first)
    by_offset = run_cli("consume", topic, "--partition", "0", "--offset", "7", "--max-messages", "3", bootstrap=b)
    assert by_offset.out.splitlines() == ["r7", "r8", "r9"], str(by_offset)
    # -2 means the last two records of each partition; partition 1 is empty.
    last_two = run_cli("consume", topic, "--offset", "-2", "--max-messages", "2", bootstrap=b)
    assert last_two.out.splitlines() == ["r8", "r9"], str(last_two)

    time.sleep(0.05)
    boundary = datetime.now(timezone.utc).isoformat()
    time.sleep(0.05)
    later = run_cli("produce", topic, "--partition", "0", bootstrap=b, stdin="late1\nlate2\n")
    assert later.code == 0, str(later)
    since = run_cli("consume", topic, "--from-time", boundary, "--max-messages", "2", bootstrap=b)
    assert since.out.splitlines() == ["late1", "late2"], str(since)

    # The default start is the end: nothing old is printed.
    fresh = run_cli("consume", topic, "--timeout", "1", bootstrap=b)
    assert fresh.code == 0 and fresh.out == "", str(fresh)


def test_consume_usage_errors(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    assert_clean_failure(run_cli("consume", topic, "--from-beginning", "--offset", "3", bootstrap=b), code=2,
                         contains="use one")
    assert_clean_failure(run_cli("consume", topic, "--partition", "5", bootstrap=b), contains="has no partition 5")
    assert_clean_failure(run_cli("consume", topic, "--from-time", "last tuesday", bootstrap=b), code=2,
                         contains="ISO 8601")
    assert_clean_failure(run_cli("produce", topic, "--json", "--key", "k", bootstrap=b, stdin="{}"), code=2)


def test_sigint_exits_cleanly(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    assert run_cli("produce", topic, bootstrap=b, stdin="a\nb\nc\n").code == 0
    proc = start_cli("consume", topic, "--from-beginning", bootstrap=b)
    try:
        read_lines(proc, 3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err
    assert b"Traceback" not in err and b"Traceback" not in out
    assert b"consumed 3 records" in err


def test_sigint_commits_group_offsets(cli_broker, topic) -> None:
    b = cli_broker.bootstrap
    group = unique("g")
    assert run_cli("produce", topic, bootstrap=b, stdin="".join(f"m{i}\n" for i in range(6))).code == 0
    proc = start_cli("consume", topic, "--group", group, "--from-beginning", bootstrap=b)
    try:
        read_lines(proc, 6)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err
    assert b"Traceback" not in err

    # Everything printed was committed: a second run of the group finds nothing new.
    again = run_cli("consume", topic, "--group", group, "--from-beginning", "--timeout", "2", bootstrap=b)
    assert again.code == 0 and again.out == "", str(again)
    assert run_cli("produce", topic, bootstrap=b, stdin="new\n").code == 0
    after = run_cli("consume", topic, "--group", group, "--max-messages", "1", "--timeout", "20", bootstrap=b)
    assert after.out == "new\n", str(after)


def test_broken_pipe_is_quiet(cli_broker, topic) -> None:
    import subprocess
    import sys

    from tests.support.cli import REPO_ROOT, cli_env

    b = cli_broker.bootstrap
    assert run_cli("produce", topic, "--partition", "0", bootstrap=b,
                   stdin="".join(f"line-{i}\n" for i in range(5000))).code == 0
    pipeline = subprocess.run(
        f"{sys.executable} -m tidelog.cli consume {topic} --from-beginning --timeout 5 | head -n 1",
        shell=True, capture_output=True, cwd=REPO_ROOT, env=cli_env(b), timeout=60)
    assert pipeline.stdout == b"line-0\n"
    assert b"Traceback" not in pipeline.stderr and b"Error" not in pipeline.stderr, pipeline.stderr


def test_a_from_beginning_group_run_also_starts_its_empty_partitions_next_time(cli_broker, topic) -> None:
    # Records only in partition 0; partition 1 stays empty while the group reads from the beginning.
    b = cli_broker.bootstrap
    group = unique("g")
    assert run_cli("produce", topic, "--partition", "0", bootstrap=b, stdin="a\nb\n").code == 0
    first = run_cli("consume", topic, "--group", group, "--from-beginning", "--max-messages", "2",
                    "--timeout", "20", bootstrap=b)
    assert first.out == "a\nb\n", str(first)
    # A record later produced to the empty partition reaches the group's next run without --from-beginning.
    assert run_cli("produce", topic, "--partition", "1", bootstrap=b, stdin="late\n").code == 0
    after = run_cli("consume", topic, "--group", group, "--max-messages", "1", "--timeout", "20", bootstrap=b)
    assert after.out == "late\n", str(after)
