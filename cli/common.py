"""Options, parameter types and output helpers every CLI command shares.

Conventions kept here so the commands cannot drift apart:

* ``-b/--bootstrap`` (env ``TIDELOG_BOOTSTRAP``) and ``-X/--client-config``
  (raw librdkafka settings, e.g. for TLS/SASL) on every command that talks to
  a broker;
* ``-o/--output text|json`` on every command that prints data; JSON goes to
  stdout as one document (or one object per line for streams);
* diagnostics and progress go to stderr, data to stdout, so pipes stay clean.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable

import click

DEFAULT_BOOTSTRAP = "localhost:9092"
BOOTSTRAP_ENV = "TIDELOG_BOOTSTRAP"


def parse_key_value(text: str, *, what: str = "setting") -> tuple[str, str]:
    """Split ``k=v`` at the first '='; values may contain '='."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise click.BadParameter(f"expected {what} as key=value, got {text!r}")
    return name, value


def parse_key_values(items: tuple[str, ...] | list[str], *, what: str = "setting") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, v = parse_key_value(item, what=what)
        out[k] = v
    return out


def parse_timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch from ISO 8601 (or a plain integer of epoch milliseconds).

    A time without a zone is local time, as a person typing it expects (and as
    kafka-consumer-groups does); add ``Z`` or ``+02:00`` to be explicit.
    """
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (example: 2024-05-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # interpret as local time
    return int(moment.astimezone(timezone.utc).timestamp() * 1000)


class TimestampType(click.ParamType):
    name = "ISO8601"

    def convert(self, value: Any, param, ctx) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_timestamp_ms(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIMESTAMP = TimestampType()


def connection_options(fn: Callable) -> Callable:
    """Add ``--bootstrap`` and ``-X`` and pass them on as one ``kafka`` argument."""

    @click.option("-b", "--bootstrap", envvar=BOOTSTRAP_ENV, default=DEFAULT_BOOTSTRAP, show_default=True,
                  show_envvar=True, metavar="HOST:PORT",
                  help="Broker to talk to (any Kafka-compatible broker). Example: -b broker1:9092")
    @click.option("-X", "--client-config", "client_config", multiple=True, metavar="KEY=VALUE",
                  help="Extra librdkafka client setting, repeatable. Example: -X security.protocol=SSL")
    @functools.wraps(fn)
    def wrapper(*args, bootstrap: str, client_config: tuple[str, ...], **kwargs):
        from .kafka import Kafka  # the client library loads only for commands that need it

        extra = parse_key_values(client_config, what="client setting")
        return fn(*args, kafka=Kafka(bootstrap, extra), **kwargs)

    return wrapper


def output_option(*choices: str, default: str = "text") -> Callable:
    choices = choices or ("text", "json")
    return click.option("-o", "--output", type=click.Choice(choices), default=default, show_default=True,
                        help="Output format. Example: --output json")


def emit_json(document: Any) -> None:
    """One JSON document on stdout (for scripts: ``| jq``)."""
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def emit_table(headers: list[str], rows: list[list[Any]]) -> None:
    click.echo(format_table(headers, rows))


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns separated by two spaces: readable and still easy to ``awk``."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def note(message: str) -> None:
    """A human-facing remark on stderr, kept out of piped data."""
    click.echo(message, err=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so ``finally`` blocks (temporary topics, flushes) still run."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextmanager
def terminate_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` instead of killing the process outright."""

    def handler(signum, _frame) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
