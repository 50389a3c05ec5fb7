"""`tidelog group ...` against a real broker, with `tidelog consume --group` as the group's member."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timezone

import pytest

from tests.support.cli import (assert_clean_failure, cli_broker, read_lines, run_cli, start_cli,  # noqa: F401
                               unique)


@pytest.fixture
def loaded(cli_broker) -> tuple[str, str]:
    """A two-partition topic holding 5 records per partition, and a group that has read 3 of partition 0."""
    b = cli_broker.bootstrap
    topic, group = unique("gt"), unique("grp")
    assert run_cli("topic", "create", topic, "--partitions", "2", bootstrap=b).code == 0
    lines = [json.dumps({"value": f"p{p}-{i}", "partition": p}) for p in (0, 1) for i in range(5)]
    done = run_cli("produce", topic, "--json", bootstrap=b, stdin="\n".join(lines))
    assert done.code == 0, str(done)
    read = run_cli("consume", topic, "--group", group, "--partition", "0", "--from-beginning", "--max-messages", "3",
                   bootstrap=b)
    assert read.out.splitlines() == ["p0-0", "p0-1", "p0-2"], str(read)
    return topic, group


def describe(bootstrap: str, group: str) -> dict:
    done = run_cli("group", "describe", group, "-o", "json", bootstrap=bootstrap)
    assert done.code == 0, str(done)
    return json.loads(done.out)


def offsets(doc: dict) -> dict[int, tuple]:
    return {o["partition"]: (o["committed_offset"], o["log_end_offset"], o["lag"]) for o in doc["offsets"]}


def test_list_and_describe(cli_broker, loaded) -> None:
    b = cli_broker.bootstrap
    topic, group = loaded
    listed = json.loads(run_cli("group", "list", "-o", "json", bootstrap=b).out)
    mine = [g for g in listed if g["group"] == group]
    # Only offsets were committed (no membership yet): Kafka calls that a simple group.
    assert mine == [{"group": group, "state": "Empty", "type": "simple"}]
    assert group in run_cli("group", "list", bootstrap=b).out

    doc = describe(b, group)
    assert doc["state"] == "Empty" and doc["members"] == []
    assert offsets(doc) == {0: (3, 5, 2)}
    assert doc["total_lag"] == 2
    text = run_cli("group", "describe", group, bootstrap=b)
    assert "state: Empty" in text.out and "LAG" in text.out, str(text)


def test_describe_shows_members_and_reset_is_refused_while_active(cli_broker, loaded) -> None:
    b = cli_broker.bootstrap
    topic, group = loaded
    member = start_cli("consume", topic, "--group", group, "--from-beginning", bootstrap=b)
    try:
        # p0 resumes at its commit (3); p1 has none and --from-beginning applies: 2 + 5 lines.
        got = sorted(line.decode().strip() for line in read_lines(member, 7))
        assert got == ["p0-3", "p0-4"] + [f"p1-{i}" for i in range(5)]
        doc = describe(b, group)
        assert doc["state"] == "Stable" and len(doc["members"]) == 1
        assert doc["protocol"]
        owned = {(a["topic"], a["partition"]) for a in doc["members"][0]["assignment"]}
        assert owned == {(topic, 0), (topic, 1)}

        refused = run_cli("group", "reset-offsets", group, "--topic", topic, "--to-earliest", bootstrap=b)
        assert_clean_failure(refused, contains="1 active member")
        assert_clean_failure(run_cli("group", "delete", group, bootstrap=b), contains="active members")
    finally:
        member.send_signal(signal.SIGINT)
        member.communicate(timeout=30)
    assert member.returncode in (0, 130)
    settled = describe(b, group)
    assert offsets(settled) == {0: (5, 5, 0), 1: (5, 5, 0)}  # committed on Ctrl-C


def test_reset_offsets(cli_broker, loaded) -> None:
    b = cli_broker.bootstrap
    topic, group = loaded

    dry = run_cli("group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--dry-run", "-o", "json",
                  bootstrap=b)
    assert dry.code == 0, str(dry)
    plan = json.loads(dry.out)
    assert plan["dry_run"] is True
    assert [(r["partition"], r["current_offset"], r["new_offset"]) for r in plan["partitions"]] == \
        [(0, 3, 0), (1, None, 0)]
    assert offsets(describe(b, group)) == {0: (3, 5, 2)}  # unchanged

    latest = run_cli("group", "reset-offsets", group, "--topic", topic, "--to-latest", bootstrap=b)
    assert latest.code == 0, str(latest)
    assert offsets(describe(b, group)) == {0: (5, 5, 0), 1: (5, 5, 0)}

    clamped = run_cli("group", "reset-offsets", group, "--topic", topic, "--to-offset", "99", "--partition", "1",
                      "-o", "json", bootstrap=b)
    assert json.loads(clamped.out)["partitions"][0]["note"].startswith("99 is past the log end")
    exact = run_cli("group", "reset-offsets", group, "--topic", topic, "--to-offset", "4", "--partition", "0",
                    bootstrap=b)
    assert exact.code == 0, str(exact)
    again = run_cli("consume", topic, "--group", group, "--partition", "0", "--max-messages", "1", bootstrap=b)
    assert again.out == "p0-4\n", str(again)

    boundary = datetime.now(timezone.utc).isoformat()
    time.sleep(0.05)
    assert run_cli("produce", topic, "--partition", "1", bootstrap=b, stdin="late\n").code == 0
    by_time = run_cli("group", "reset-offsets", group, "--topic", topic, "--to-datetime", boundary, "-o", "json",
                      bootstrap=b)
    moved = {r["partition"]: r["new_offset"] for r in json.loads(by_time.out)["partitions"]}
    assert moved == {0: 5, 1: 5}  # p0: nothing that recent -> end; p1: the late record


def test_reset_usage_and_missing(cli_broker, loaded) -> None:
    b = cli_broker.bootstrap
    topic, group = loaded
    assert_clean_failure(run_cli("group", "reset-offsets", group, "--topic", topic, bootstrap=b), code=2,
                         contains="exactly one of")
    assert_clean_failure(run_cli("group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--to-latest",
                                 bootstrap=b), code=2)
    assert_clean_failure(run_cli("group", "reset-offsets", group, "--topic", unique("none"), "--to-earliest",
                                 bootstrap=b), contains="does not exist")
    assert_clean_failure(run_cli("group", "describe", unique("nogroup"), bootstrap=b), contains="does not exist")


def test_delete(cli_broker, loaded) -> None:
    b = cli_broker.bootstrap
    _, group = loaded
    done = run_cli("group", "delete", group, bootstrap=b)
    assert done.code == 0 and done.out.strip() == f"deleted group {group}", str(done)
    assert group not in run_cli("group", "list", bootstrap=b).out
    assert_clean_failure(run_cli("group", "delete", group, bootstrap=b), contains="does not exist")
