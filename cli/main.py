"""The `tidelog` command.

:func:`main` is the one place that turns failures into exit statuses: every
error becomes a single ``error: ...`` line on stderr (see
:mod:`tidelog.cli.errors`), Ctrl-C exits 130, and a closed stdout pipe
(``tidelog consume t | head``) exits quietly.  Set ``TIDELOG_DEBUG=1`` to get
the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import click

from .bench_cmds import bench_group
from .consume_cmds import consume_command
from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, one_line
from .group_cmds import group_group
from .produce_cmds import produce_command
from .serve_cmds import init_command, serve_command
from .topic_cmds import topic_group


def _version() -> str:
    try:
        return version("tidelog")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", prog_name="tidelog")
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


cli.add_command(serve_command)
cli.add_command(init_command)
cli.add_command(topic_group)
cli.add_command(produce_command)
cli.add_command(consume_command)
cli.add_command(bench_group)
cli.add_command(group_group)


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
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, and keep Python from
        # complaining again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the promise is "never a traceback"
        if os.environ.get("TIDELOG_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc}: rerun with TIDELOG_DEBUG=1 and report it", EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["cli", "main"]
