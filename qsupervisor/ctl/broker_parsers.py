"""Command-line syntax of the qsupervisorctl commands that talk to RabbitMQ directly
(publish, failed, retry-failed, purge-failed). Their implementation, in broker_commands.py,
loads pika and the configuration loader, so it is imported only when one of them runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from qsupervisor.units import parse_duration

COMMANDS = ("publish", "failed", "retry-failed", "purge-failed")
DEFAULT_SHOWN = 20


def add_parsers(sub: Any) -> None:
    """Add the broker commands to qsupervisorctl's subparsers."""
    p = _parser(sub, "publish", "publish a message to a program's queue, now or delayed")
    p.add_argument("payload", metavar="PAYLOAD",
                   help="JSON text (format json) or text (format raw); '-' reads standard input")
    p.add_argument("--delay", type=_duration, default=None, metavar="DURATION",
                   help="deliver after this long: 30s, 15m, 2h, 1d ...")
    p.add_argument("--header", action="append", default=[], metavar="K=V",
                   help="add a header (a string value); repeatable")
    p.add_argument("--id", "--message-id", dest="message_id", default=None, metavar="ID",
                   help="message id (default: a random uuid)")
    p.add_argument("--priority", type=_priority, default=None, metavar="N",
                   help="message priority, 0 to 255 (queues honour it up to their "
                        "x-max-priority)")
    p.add_argument("--format", dest="format", choices=("json", "raw"), default=None,
                   help="how to send PAYLOAD (default: the program's format); raw sends "
                        "its bytes unchecked")
    p.add_argument("--raw", dest="format", action="store_const", const="raw",
                   help="the same as --format raw")
    p = _parser(sub, "failed", "show dead-lettered messages without removing them")
    p.add_argument("-n", dest="limit", type=_positive, default=DEFAULT_SHOWN, metavar="N",
                   help=f"show at most N messages (default {DEFAULT_SHOWN})")
    # SUPPRESS: qsupervisorctl also has a global --json, which a default here would reset.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p = _parser(sub, "retry-failed", "move dead-lettered messages back to the program's "
                                     "queue, attempts reset")
    p.add_argument("ids", nargs="*", metavar="ID", help="message ids, as `failed` shows them")
    p.add_argument("--all", action="store_true", help="every dead-lettered message")
    p = _parser(sub, "purge-failed", "delete every message in a program's dead-letter queue")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _parser(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("program", metavar="PROGRAM")
    return p


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 255, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value
