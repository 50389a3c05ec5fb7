"""Every client command and option explains itself, with an example."""

from __future__ import annotations

import click

from tidelog.cli.main import cli

# The people-facing Kafka client commands (serve/init/tier have their own conventions).
CLIENT_COMMANDS = ["bench", "consume", "group", "produce", "topic"]


def walk(command: click.Command, path: str):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), f"{path} {name}")


def leaf_commands():
    ctx = click.Context(cli)
    for name in CLIENT_COMMANDS:
        for path, command in walk(cli.get_command(ctx, name), name):
            if not isinstance(command, click.Group):
                yield path, command


def test_every_command_has_an_example() -> None:
    ctx = click.Context(cli)
    for name in CLIENT_COMMANDS:
        for path, command in walk(cli.get_command(ctx, name), name):
            assert "Example" in (command.help or ""), path


def test_every_option_has_help_and_valued_options_an_example() -> None:
    for path, command in leaf_commands():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            assert param.help, f"{path} {param.opts}"
            if not param.is_flag:
                assert "Example" in param.help, f"{path} {param.opts}"


def test_client_commands_share_connection_options() -> None:
    for path, command in leaf_commands():
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {"--bootstrap", "-b", "-X"} <= opts, path
