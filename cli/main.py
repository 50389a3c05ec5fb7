"""The `tidelog` command."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import PackageNotFoundError, version

import click

from .serve_cmds import init_command, serve_command


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
    Then point any Kafka client at localhost:9092.
    """


cli.add_command(serve_command)
cli.add_command(init_command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["cli", "main", "asyncio"]
