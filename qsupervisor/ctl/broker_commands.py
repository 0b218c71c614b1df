"""qsupervisorctl commands that talk to RabbitMQ directly, not to the daemon.

They work whether or not qsupervisord runs: the configuration file gives the broker URL
and the program's queue, dead-letter queue, delay exchange, message format and delay
resolution. Exit codes: 0 success; 1 the command failed (broker unreachable, a message
refused, IDs not found); 2 usage or configuration error.

pika and the broker modules are imported inside the commands, not at the top: every
qsupervisorctl invocation builds these parsers, and only these four commands need them
(it halves the start-up time of `qsupervisorctl status`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

from qsupervisor.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    ProgramConfig,
    load_config,
)
from qsupervisor.config.model import DaemonConfig

if TYPE_CHECKING:
    import pika

    from qsupervisor.broker.messages import FailedMessage
    from qsupervisor.broker.topology import Topology

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Exit 2: the command line or the configuration is wrong."""


class CommandFailed(Exception):
    """Exit 1: the command was valid but did not (entirely) succeed."""


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The program a command is about, with the daemon settings it needs."""

    config_path: str
    daemon: DaemonConfig
    program: ProgramConfig

    def topology(self) -> Topology:
        from qsupervisor.broker.topology import Topology

        return Topology.for_program(self.program, self.daemon.delay)


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; return the exit code."""
    try:
        return _HANDLERS[args.command](args, _target(args))
    except UsageError as exc:
        print(f"qsupervisorctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        print(f"qsupervisorctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _target(args: argparse.Namespace) -> Target:
    path = args.config or os.environ.get("QSUPERVISOR_CONFIG") or DEFAULT_CONFIG_PATH
    try:
        config = load_config(path, check_writable=False)
    except ConfigError as exc:
        raise UsageError(f"{path}: the configuration has problems:\n{exc}") from None
    program = config.programs.get(args.program)
    if program is None:
        known = ", ".join(config.programs) or "none"
        raise UsageError(f"no program '{args.program}' in {path} (programs: {known})")
    return Target(path, config.daemon, program)


@contextlib.contextmanager
def _connection(target: Target, command: str) -> Iterator[pika.BlockingConnection]:
    """_broker's connection alone."""
    with _broker(target, command) as (connection, _):
        yield connection


@contextlib.contextmanager
def _broker(target: Target, command: str) -> Iterator[tuple[pika.BlockingConnection, str]]:
    """A connection for the command and the URL of its node; every broker-side failure
    becomes CommandFailed."""
    import pika.exceptions

    from qsupervisor.broker.connection import BrokerNodes, BrokerUnreachable, display_url
    from qsupervisor.broker.publisher import PublishError
    from qsupervisor.broker.topology import TopologyError

    try:
        connection, url = BrokerNodes(target.daemon.broker).connect(
            name=f"qsupervisorctl {command}")
    except BrokerUnreachable as exc:
        raise CommandFailed(str(exc)) from None
    try:
        yield connection, url
    except (TopologyError, PublishError) as exc:
        raise CommandFailed(str(exc)) from None
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise CommandFailed(f"lost the connection to the broker at {display_url(url)}: "
                            f"{exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()


# -- publish ---------------------------------------------------------------------------------


def cmd_publish(args: argparse.Namespace, target: Target) -> int:
    from qsupervisor.broker import messages, topology
    from qsupervisor.broker.connection import where
    from qsupervisor.broker.publisher import UnencodableMessage, check_encodable, publish_delayed

    program, layout = target.program, target.topology()
    fmt = args.format or program.format
    body, content_type = messages.encode(_payload(args.payload, fmt), fmt)
    try:
        layout.chain.routing_key(args.delay or 0.0)
    except ValueError as exc:
        raise UsageError(f"--delay: {exc}") from None
    properties = messages.message_properties(
        content_type, message_id=args.message_id, priority=args.priority,
        headers=messages.first_publish_headers(_headers(args.header)))
    try:
        check_encodable(properties, layout.chain.exchange, layout.queue)
    except UnencodableMessage as exc:  # a 300-byte --id, say: refused before connecting
        raise UsageError(str(exc)) from None
    with _broker(target, "publish") as (connection, url):
        # Declaring here too lets messages be queued before the program ever started.
        topology.declare(connection.channel, program, target.daemon.delay)
        channel = connection.channel()
        channel.confirm_delivery()
        # Without --delay this publishes straight to the queue.
        publish_delayed(channel, layout.chain, body, properties, args.delay or 0.0,
                        where=where(url, f"broker in {target.config_path}"))
    print(properties.message_id)
    return EXIT_OK


def _payload(text: str, fmt: str) -> Any:
    raw = sys.stdin.buffer.read() if text == "-" else text.encode("utf-8", "surrogateescape")
    if fmt != "json":
        return raw
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"PAYLOAD is not valid JSON ({exc}); program format is json") from None


def _not_json(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and the consumers in other languages)
    # does not.
    raise ValueError(f"{name} is not a JSON value")


def _headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--header expects KEY=VALUE, got {pair!r}")
        headers[key] = value
    return headers


# -- failed ---------------------------------------------------------------------------------------


def cmd_failed(args: argparse.Namespace, target: Target) -> int:
    from qsupervisor.broker import failed, topology

    layout = target.topology()
    queue = layout.dead_letter_queue
    with _connection(target, "failed") as connection:
        depth = topology.queue_depth(connection.channel, queue)
        shown: list[FailedMessage] = []
        if depth and depth[0]:
            refresh = topology.delivery_limited(connection.channel, layout)
            shown = failed.peek(connection.channel, queue, args.limit, refresh)
    total = depth[0] if depth else 0
    if args.json:
        print(json.dumps({"queue": queue, "exists": depth is not None, "total": total,
                          "messages": [asdict(m) for m in shown]}, indent=2))
    else:
        print(render_failed(queue, depth is not None, total, shown))
    return EXIT_OK


def render_failed(queue: str, exists: bool, total: int, shown: list[FailedMessage]) -> str:
    if not exists:
        return f"{queue}: no such queue yet (created when the program starts); nothing failed"
    head = f"{queue}: {total} message{'s' if total != 1 else ''}"
    if not shown:
        return head
    if len(shown) < total:
        head += f", showing the first {len(shown)}"
    rows = [("ID", "LAST FAILED", "ATTEMPTS", "ERROR")]
    rows += [(m.id, _when(m.last_failed_at), str(m.attempts), _error(m)) for m in shown]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3]
             for row in rows]
    return "\n".join([head] + [line.rstrip() for line in lines])


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _error(message: FailedMessage) -> str:
    first_line = message.error.strip().splitlines()[0] if message.error.strip() else ""
    parts = [p for p in (message.reason, message.error_type, first_line) if p]
    text = ": ".join(parts) or "(no failure headers)"
    return text if len(text) <= 100 else text[:99] + "…"


# -- retry-failed ------------------------------------------------------------------------------


def cmd_retry_failed(args: argparse.Namespace, target: Target) -> int:
    from qsupervisor.broker import failed, topology

    if args.all == bool(args.ids):
        raise UsageError("retry-failed: give either --all or message IDs")
    layout = target.topology()
    with _connection(target, "retry-failed") as connection:
        depth = topology.queue_depth(connection.channel, layout.dead_letter_queue)
        if depth is None or depth[0] == 0:
            result = failed.RetryResult((), tuple(sorted(set(args.ids))))
        else:
            topology.declare(connection.channel, target.program, target.daemon.delay)
            channel = connection.channel()
            channel.confirm_delivery()
            ids = None if args.all else set(args.ids)
            refresh = topology.delivery_limited(connection.channel, layout)
            result = failed.retry(channel, layout.dead_letter_queue, layout.queue, ids,
                                  depth[0], refresh)
            channel.close()
    count = len(result.moved)
    print(f"moved {count} message{'s' if count != 1 else ''} from "
          f"{layout.dead_letter_queue} to {layout.queue}")
    if result.error:
        raise CommandFailed(f"not all moved: {result.error}")
    if result.not_found:
        missing = ", ".join(result.not_found)
        raise CommandFailed(f"not found in {layout.dead_letter_queue}: {missing}")
    return EXIT_OK


# -- purge-failed --------------------------------------------------------------------------------


def cmd_purge_failed(args: argparse.Namespace, target: Target) -> int:
    from qsupervisor.broker import failed, topology

    queue = target.topology().dead_letter_queue
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to purge {queue} without --yes: standard input is "
                             "not a terminal to ask on")
        # A connection of its own, closed before asking: a person may take longer to answer
        # than the broker's heartbeat timeout.
        with _connection(target, "purge-failed") as connection:
            depth = topology.queue_depth(connection.channel, queue)
        if depth is None:
            print(f"{queue}: no such queue; nothing to purge")
            return EXIT_OK
        if not _confirm(f"Delete the {depth[0]} message(s) in {queue}? [y/N] "):
            raise CommandFailed("not purged")
    with _connection(target, "purge-failed") as connection:
        purged = failed.purge(connection.channel, queue)
    if purged is None:
        print(f"{queue}: no such queue; nothing to purge")
    else:
        print(f"purged {purged} message{'s' if purged != 1 else ''} from {queue}")
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


_HANDLERS: Mapping[str, Callable[[argparse.Namespace, Target], int]] = {
    "publish": cmd_publish,
    "failed": cmd_failed,
    "retry-failed": cmd_retry_failed,
    "purge-failed": cmd_purge_failed,
}
