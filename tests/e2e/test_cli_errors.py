"""Every CLI failure is one line with a hint and a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from tests.support.cli import assert_clean_failure, cli_broker, dead_bootstrap, run_cli, unique  # noqa: F401

CLIENT_COMMANDS = [
    ["topic", "list"],
    ["topic", "create", "t", "--partitions", "1"],
    ["topic", "describe", "t"],
    ["topic", "alter-config", "t", "--set", "retention.ms=1"],
    ["topic", "delete", "t"],
    ["produce", "t"],
    ["consume", "t"],
    ["bench", "produce", "--records", "10"],
    ["group", "list"],
    ["group", "describe", "g"],
    ["group", "reset-offsets", "g", "--topic", "t", "--to-earliest"],
    ["group", "delete", "g"],
]


@pytest.mark.parametrize("args", CLIENT_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_unreachable_broker(args) -> None:
    where = dead_bootstrap()
    result = run_cli(*args, "--bootstrap", where, stdin="x\n", timeout=30)
    line = assert_clean_failure(result, code=1)
    assert line == (f"error: cannot reach broker at {where} (connection refused): is `tidelog serve` running? "
                    "(set --bootstrap or TIDELOG_BOOTSTRAP)")


def test_bootstrap_from_environment() -> None:
    where = dead_bootstrap()
    result = run_cli("topic", "list", bootstrap=where)
    assert_clean_failure(result, contains=f"cannot reach broker at {where}")


def test_missing_topic_for_data_commands(cli_broker) -> None:
    b = cli_broker.bootstrap
    missing = unique("missing")
    for args in (["produce", missing], ["consume", missing], ["consume", missing, "--group", "g"]):
        result = run_cli(*args, bootstrap=b, stdin="hello\n")
        assert_clean_failure(result, contains=f"topic '{missing}' does not exist")


def test_bad_client_setting_and_usage(cli_broker) -> None:
    b = cli_broker.bootstrap
    assert_clean_failure(run_cli("topic", "list", "-X", "no.such.property=1", bootstrap=b),
                         contains="invalid client setting")
    assert_clean_failure(run_cli("topic", "list", "-X", "justakey", bootstrap=b), code=2)
    assert_clean_failure(run_cli("produce", bootstrap=b), code=2, contains="Missing argument")
    assert_clean_failure(run_cli("no-such-command"), code=2, contains="No such command")


def test_help_has_examples() -> None:
    for args in (["topic", "create"], ["produce"], ["consume"], ["bench", "e2e"], ["group", "reset-offsets"]):
        result = run_cli(*args, "--help")
        assert result.code == 0, str(result)
        assert "Example" in result.out, str(result)
