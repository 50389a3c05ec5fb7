"""What the CLI tells a person when something goes wrong.

Invariant: every failure a command can hit ends as exactly one line on stderr,
``error: <what happened>: <what to do>``, and a non-zero exit status; never a
traceback.  Commands raise :class:`CliError`; the Kafka client's errors are
translated here by *name* (``KafkaError.name()``), so this module needs no
client import and stays pure.

Exit statuses: 1 for a failed operation, 2 for bad usage (click's convention),
130 after Ctrl-C and 143 after SIGTERM (the shell's 128 + signal convention).
"""

from __future__ import annotations

import re

import click

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# librdkafka names for "the broker cannot be reached at all".
UNREACHABLE = frozenset({"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT", "_TIMED_OUT_QUEUE"})
UNKNOWN_TOPIC = frozenset({"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_ID", "_UNKNOWN_PARTITION"})


class CliError(click.ClickException):
    """A failure to report as one line, ``error: message``."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE, kafka_error: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kafka_error = kafka_error  # librdkafka's error name, when the client raised it

    def show(self, file=None) -> None:  # click calls this in standalone mode
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(text: str) -> str:
    """Collapse a multi-line message so the one-line promise holds."""
    return " ".join(str(text).split())


def unreachable(bootstrap: str, reason: str | None = None) -> CliError:
    detail = f" ({reason})" if reason else ""
    return CliError(f"cannot reach broker at {bootstrap}{detail}: is `tidelog serve` running? "
                    "(set --bootstrap or TIDELOG_BOOTSTRAP)")


_CONNECT_REASON = re.compile(r"failed: (?P<reason>.+?)(?: \(after \d+ms in state \w+\))?$")


def transport_reason(message: str) -> str | None:
    """Pull the reason ("connection refused") out of librdkafka's transport error text, e.g.
    ``h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)``.
    """
    if "Failed to resolve" in message:
        return "host name not found"
    match = _CONNECT_REASON.search(message.strip())
    if not match:
        return None
    return match.group("reason").strip().rstrip(".").lower() or None


def explain(name: str, message: str, *, topic: str | None = None, group: str | None = None,
            bootstrap: str | None = None) -> str:
    """The friendly text for a Kafka error, given its librdkafka name and message.

    ``topic``/``group``/``bootstrap`` are what the command was working on, so
    the text can say which topic is missing rather than echo the client.
    """
    message = one_line(message or "")
    t = f" {topic!r}" if topic else ""
    g = f" {group!r}" if group else ""
    if name in UNKNOWN_TOPIC:
        return f"topic{t} does not exist: list topics with `tidelog topic list`"
    if name == "TOPIC_ALREADY_EXISTS":
        return f"topic{t} already exists: pass --if-not-exists to accept an existing topic"
    if name == "INVALID_CONFIG":
        return f"invalid topic config{': ' + message if message else ''}: see `tidelog topic describe` for valid names"
    if name == "INVALID_PARTITIONS":
        return f"invalid partition count{': ' + message if message else ''}: use a positive --partitions"
    if name == "INVALID_TOPIC_EXCEPTION":
        return (f"invalid topic name{t}{': ' + message if message else ''}: "
                "use letters, digits, '.', '_' and '-' (at most 249)")
    if name == "INVALID_REPLICATION_FACTOR":
        return f"invalid replication factor{': ' + message if message else ''}"
    if name == "POLICY_VIOLATION":
        return f"the broker's policy refused the request: {message}"
    if name == "GROUP_ID_NOT_FOUND":
        return f"group{g} does not exist: list groups with `tidelog group list`"
    if name == "NON_EMPTY_GROUP":
        return f"group{g} still has active members: stop its consumers first"
    if name in ("LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION", "NOT_LEADER_OR_FOLLOWER"):
        return (f"a partition{' of ' + repr(topic) if topic else ''} has no leader right now "
                "(a broker is starting or taking over): retry in a few seconds")
    if name in ("COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS"):
        return f"the group coordinator is not available yet ({message or name}): retry in a few seconds"
    if name in ("UNSUPPORTED_VERSION", "_UNSUPPORTED_FEATURE"):
        return f"the broker does not support this operation ({message or name})"
    if name in ("MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"):
        return "record is larger than the topic's max.message.bytes: raise it with `tidelog topic alter-config`"
    if name == "_MSG_TIMED_OUT":
        return "delivery timed out: the broker did not acknowledge the record in time"
    if name.endswith("_AUTHORIZATION_FAILED"):
        return f"not authorised ({message or name}): check the credentials given with -X"
    if name in UNREACHABLE:
        where = f" at {bootstrap}" if bootstrap else ""
        return (f"cannot reach broker{where} ({message or name}): is `tidelog serve` running? "
                "(set --bootstrap or TIDELOG_BOOTSTRAP)")
    if name == "_INVALID_ARG":
        return f"invalid client setting: {message}"
    return f"{message or 'request failed'} ({name})"


def from_kafka(err, **context) -> CliError:
    """Turn a ``KafkaError`` (or a ``KafkaException`` wrapping one) into a :class:`CliError`."""
    inner = err.args[0] if err.__class__.__name__ == "KafkaException" and err.args else err
    name = inner.name() if hasattr(inner, "name") else type(inner).__name__
    text = inner.str() if hasattr(inner, "str") else str(inner)
    return CliError(explain(name, text, **context), kafka_error=name)
