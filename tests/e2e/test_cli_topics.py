"""`tidelog topic ...` against a real broker, run as a subprocess."""

from __future__ import annotations

import json

from tests.support.cli import assert_clean_failure, cli_broker, run_cli, unique  # noqa: F401


def test_topic_lifecycle(cli_broker) -> None:
    b = cli_broker.bootstrap
    name = unique("orders")

    created = run_cli("topic", "create", name, "--partitions", "3", "--config", "retention.ms=3600000", bootstrap=b)
    assert created.code == 0, str(created)
    assert created.out.strip() == f"created topic {name} with 3 partitions"

    listed = run_cli("topic", "list", bootstrap=b)
    assert listed.code == 0, str(listed)
    assert any(line.split() == [name, "3"] for line in listed.out.splitlines()), listed.out
    as_json = json.loads(run_cli("topic", "list", "-o", "json", bootstrap=b).out)
    assert {"name": name, "partitions": 3} in as_json

    produced = run_cli("produce", name, "--partition", "1", bootstrap=b, stdin="a\nb\n")
    assert produced.code == 0, str(produced)

    described = json.loads(run_cli("topic", "describe", name, "--output", "json", bootstrap=b).out)
    assert described["name"] == name
    parts = {p["partition"]: p for p in described["partitions"]}
    assert sorted(parts) == [0, 1, 2]
    assert parts[1]["log_start_offset"] == 0 and parts[1]["log_end_offset"] == 2
    assert parts[0]["log_end_offset"] == 0
    assert all(p["leader"] >= 0 for p in parts.values())
    assert described["configs"]["retention.ms"] == {"value": "3600000", "default": False, "read_only": False,
                                                     "sensitive": False}
    assert described["configs"]["cleanup.policy"]["default"] is True

    text = run_cli("topic", "describe", name, bootstrap=b)
    assert text.code == 0, str(text)
    assert "LOG-END" in text.out and "retention.ms" in text.out

    altered = run_cli("topic", "alter-config", name, "--set", "cleanup.policy=compact", "--set",
                      "max.message.bytes=2000000", "--delete", "retention.ms", bootstrap=b)
    assert altered.code == 0, str(altered)
    configs = json.loads(run_cli("topic", "describe", name, "-o", "json", bootstrap=b).out)["configs"]
    assert configs["cleanup.policy"]["value"] == "compact"
    assert configs["max.message.bytes"]["value"] == "2000000"
    assert configs["retention.ms"]["default"] is True

    deleted = run_cli("topic", "delete", name, bootstrap=b)
    assert deleted.code == 0, str(deleted)
    assert name not in run_cli("topic", "list", bootstrap=b).out


def test_create_twice_and_if_not_exists(cli_broker) -> None:
    b = cli_broker.bootstrap
    name = unique()
    assert run_cli("topic", "create", name, "-p", "1", bootstrap=b).code == 0
    again = run_cli("topic", "create", name, "-p", "1", bootstrap=b)
    assert_clean_failure(again, contains="already exists")
    tolerant = run_cli("topic", "create", name, "-p", "1", "--if-not-exists", bootstrap=b)
    assert tolerant.code == 0, str(tolerant)


def test_create_with_broker_default_partitions(cli_broker) -> None:
    name = unique()
    done = run_cli("topic", "create", name, bootstrap=cli_broker.bootstrap)
    assert done.code == 0, str(done)
    assert done.out.startswith(f"created topic {name} with ")


def test_invalid_config_is_one_line(cli_broker) -> None:
    b = cli_broker.bootstrap
    bad_name = run_cli("topic", "create", unique(), "--config", "no.such.config=1", bootstrap=b)
    assert_clean_failure(bad_name, contains="invalid topic config")
    bad_value = run_cli("topic", "create", unique(), "--config", "retention.ms=soon", bootstrap=b)
    assert_clean_failure(bad_value, contains="invalid topic config")
    not_kv = run_cli("topic", "create", unique(), "--config", "retention.ms", bootstrap=b)
    assert_clean_failure(not_kv, contains="key=value", code=2)

    name = unique()
    assert run_cli("topic", "create", name, bootstrap=b).code == 0
    altered = run_cli("topic", "alter-config", name, "--set", "cleanup.policy=sometimes", bootstrap=b)
    assert_clean_failure(altered, contains="invalid topic config")
    nothing = run_cli("topic", "alter-config", name, bootstrap=b)
    assert_clean_failure(nothing, contains="nothing to change", code=2)


def test_missing_topic_is_one_line(cli_broker) -> None:
    b = cli_broker.bootstrap
    missing = unique("missing")
    for args in (["topic", "describe", missing], ["topic", "delete", missing],
                 ["topic", "alter-config", missing, "--set", "retention.ms=1"]):
        assert_clean_failure(run_cli(*args, bootstrap=b), contains=f"topic '{missing}' does not exist")
    quiet = run_cli("topic", "delete", missing, "--if-exists", bootstrap=b)
    assert quiet.code == 0, str(quiet)


def test_invalid_topic_name(cli_broker) -> None:
    result = run_cli("topic", "create", "bad/name", bootstrap=cli_broker.bootstrap)
    assert_clean_failure(result, contains="invalid topic name")
