"""The `tidelog` command.

:func:`main` is the one place that turns failures into exit statuses: every
error becomes a single ``error: ...`` line on stderr (see
:mod:`tidelog.cli.errors`), Ctrl-C exits 130, and a closed stdout pipe
(``tidelog consume t | head``) exits quietly.  Set ``TIDELOG_DEBUG=1`` to get
the traceback of an unexpected error.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version

import click

from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, one_line

# Each command's module is imported only when that command runs: `serve` needs
# the broker but no Kafka client, the client commands need confluent-kafka but
# no broker, and every CLI call pays for what it imports.
COMMANDS = {
    "serve": "serve_cmds:serve_command",
    "init": "serve_cmds:init_command",
    "topic": "topic_cmds:topic_group",
    "produce": "produce_cmds:produce_command",
    "consume": "consume_cmds:consume_command",
    "bench": "bench_cmds:bench_group",
    "group": "group_cmds:group_group",
    "tier": "tier_cmds:tier_group",
    "deploy": "deploy_cmds:deploy_command",
    "destroy": "deploy_cmds:destroy_command",
    "status": "deploy_cmds:status_command",
    "recover": "deploy_cmds:recover_command",
}


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    # A callback rather than click.version_option: reading package metadata
    # costs ~30 ms, worth paying only when someone asks.
    if value and not ctx.resilient_parsing:
        click.echo(f"tidelog, version {_version()}")
        ctx.exit()


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attr = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(f"{__package__}.{module}"), attr), name)
        return super().get_command(ctx, name)


def _version() -> str:
    try:
        return version("tidelog")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def cli() -> None:
    """tidelog: a Kafka-compatible event log stored in S3.

    \b
    Start a broker on the embedded store:   tidelog serve
    Then point any Kafka client at localhost:9092, or use these commands:
      tidelog topic create orders --partitions 3
      echo hello | tidelog produce orders
      tidelog consume orders --from-beginning --max-messages 1
      tidelog bench produce --records 100000
    """


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def main() -> None:
    try:
        code = cli.main(prog_name="tidelog", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint, EXIT_USAGE)
    except click.ClickException as exc:  # CliError and serve/init's errors
        _fail(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, click.Abort) as exc:
        click.echo("interrupted", err=True)
        # click turns KeyboardInterrupt into Abort; common.Terminated carries SIGTERM's number.
        signum = getattr(exc, "signum", None) or getattr(exc.__cause__, "signum", None)
        sys.exit(128 + signum if signum else EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, and keep Python from
        # complaining again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except SystemError as exc:
        # A Ctrl-C that lands inside a confluent-kafka C callback surfaces as a
        # SystemError wrapping the KeyboardInterrupt: it is still an interrupt.
        interrupt = exc.__cause__ or exc.__context__
        if isinstance(interrupt, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            signum = getattr(interrupt, "signum", None)
            sys.exit(128 + signum if signum else EXIT_INTERRUPTED)
        _fail(f"unexpected {type(exc).__name__}: {exc}: rerun with TIDELOG_DEBUG=1 and report it", EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001 - the promise is "never a traceback"
        if os.environ.get("TIDELOG_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc}: rerun with TIDELOG_DEBUG=1 and report it", EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["cli", "main"]
