"""`queue_arguments:` and `bindings:` of a program: what RabbitMQ would accept, checked
when the file is read rather than when a leader declares the queue.

A program that consumes a queue another framework declares (yii2-queue declares its queue
with x-max-priority 10) must declare it with the same arguments: RabbitMQ refuses a
declaration whose arguments differ from the queue's. The arguments RabbitMQ defines are
checked for type and range here, the way the broker would check them, so a typo is a
config error with file, line and key instead of a FATAL program; unknown `x-` arguments
(plugins, later releases) pass with their YAML type. Which queue type accepts which
argument is a rule across keys (queue_type), in `type_problems`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import fields
from .fields import FieldInput, Invalid, Parser, describe
from .model import QueueArgument
from .problems import KeyPath

CLASSIC, QUORUM = "classic", "quorum"
_INT32_MAX = 2**31 - 1  # RabbitMQ reads these arguments as AMQP signed integers


@dataclass(frozen=True)
class ArgumentSpec:
    parse: Parser
    # The queue types RabbitMQ 3.10 and 4.x accept it on (the queue type's capabilities).
    queue_types: tuple[str, ...]
    why_not: str = ""  # said when the program's queue_type is not among them


def _milliseconds(minimum: int) -> Parser:
    number = fields.integer(minimum=minimum, maximum=_INT32_MAX)

    def parse(field: FieldInput) -> int:
        if isinstance(field.value, str):
            # "30s" reads well, but the value must equal what the other declarer sends
            # (an integer), so no unit conversion: say so rather than guess.
            raise Invalid(f"expected whole milliseconds as RabbitMQ takes them (30000 for 30 "
                          f"seconds), got {describe(field.value)}")
        return int(number(field))

    return parse


_BOTH = (CLASSIC, QUORUM)
ARGUMENTS: Mapping[str, ArgumentSpec] = {
    "x-max-priority": ArgumentSpec(
        fields.integer(minimum=1, maximum=255), (CLASSIC,),
        "RabbitMQ refuses x-max-priority on quorum queues (3.10 and 4.x); use queue_type: "
        "classic for a priority queue (RabbitMQ 4.0 quorum queues give messages of priority "
        "5 and above precedence without it)"),
    "x-message-ttl": ArgumentSpec(_milliseconds(0), _BOTH),
    "x-expires": ArgumentSpec(_milliseconds(1), _BOTH),
    "x-max-length": ArgumentSpec(fields.integer(minimum=0), _BOTH),
    "x-max-length-bytes": ArgumentSpec(fields.integer(minimum=0), _BOTH),
    "x-overflow": ArgumentSpec(fields.choice("drop-head", "reject-publish", "reject-publish-dlx"),
                               _BOTH),
    "x-single-active-consumer": ArgumentSpec(fields.boolean, _BOTH),
    "x-dead-letter-exchange": ArgumentSpec(lambda f: _string(f, "an exchange name"), _BOTH),
    "x-dead-letter-routing-key": ArgumentSpec(lambda f: _string(f, "a routing key"), _BOTH),
    "x-queue-mode": ArgumentSpec(fields.choice("default", "lazy"), (CLASSIC,),
                                 "quorum queues keep their messages on disk anyway"),
    "x-queue-version": ArgumentSpec(fields.integer(minimum=1, maximum=2), (CLASSIC,),
                                    "it selects a classic queue's storage format"),
    "x-queue-master-locator": ArgumentSpec(fields.choice("min-masters", "client-local", "random"),
                                           (CLASSIC,), "use x-queue-leader-locator"),
    # RabbitMQ 3.x accepts it on quorum queues only, 4.0 on classic ones too: left to the
    # broker, whose refusal is reported with the argument's name.
    "x-queue-leader-locator": ArgumentSpec(fields.choice("client-local", "balanced"), _BOTH),
    "x-delivery-limit": ArgumentSpec(
        fields.integer(minimum=1, maximum=_INT32_MAX), (QUORUM,),
        "classic queues do not count deliveries (RabbitMQ refuses the argument)"),
    "x-dead-letter-strategy": ArgumentSpec(fields.choice("at-most-once", "at-least-once"),
                                           (QUORUM,), "only quorum queues dead-letter at "
                                           "least once"),
    "x-quorum-initial-group-size": ArgumentSpec(fields.integer(minimum=1), (QUORUM,),
                                                "it sizes a quorum queue's replica group"),
    "x-max-in-memory-length": ArgumentSpec(fields.integer(minimum=0), (QUORUM,),
                                           "it is a quorum queue setting"),
    "x-max-in-memory-bytes": ArgumentSpec(fields.integer(minimum=0), (QUORUM,),
                                          "it is a quorum queue setting"),
}


def _string(field: FieldInput, what: str) -> str:
    # The empty string is a value here: x-dead-letter-routing-key "" is yii's own.
    if not isinstance(field.value, str):
        raise Invalid(f"expected {what} (a string), got {describe(field.value)}")
    return field.value


def queue_arguments(field: FieldInput) -> tuple[tuple[str, QueueArgument], ...]:
    """The mapping of argument names to values, as sorted pairs; null means none."""
    value = field.value
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of queue arguments such as {{x-max-priority: 10}}, "
                      f"got {describe(value)}")
    pairs: list[tuple[str, QueueArgument]] = []
    errors: list[tuple[KeyPath, str]] = []
    for name, item in value.items():
        try:
            pairs.append((name, _argument(name, field.item(item, (name,)))))
        except Invalid as exc:
            errors.extend(((name,) + at, message) for at, message in exc.errors)
    if "x-dead-letter-routing-key" in value and "x-dead-letter-exchange" not in value:
        errors.append((("x-dead-letter-routing-key",), "needs x-dead-letter-exchange too "
                       "(RabbitMQ refuses a dead-letter routing key without an exchange)"))
    if errors:
        raise Invalid(errors=errors)
    return tuple(sorted(pairs))


def _argument(name: str, field: FieldInput) -> QueueArgument:
    if name == "x-queue-type":
        raise Invalid("set the queue's type with the program's queue_type: classic or quorum")
    spec = ARGUMENTS.get(name)
    if spec is not None:
        return spec.parse(field)
    if not name.startswith("x-"):
        hint = fields.did_you_mean("x-" + name, ARGUMENTS) or fields.did_you_mean(name, ARGUMENTS)
        raise Invalid("unknown queue argument (RabbitMQ's start with 'x-')" + hint)
    # x-max-priorty is a typo of a known one, x-plugin-mode a plugin's own: only a near
    # miss (one or two letters) is refused.
    close = difflib.get_close_matches(name, list(ARGUMENTS), n=1, cutoff=0.85)
    if close:
        raise Invalid(f"unknown queue argument; did you mean {close[0]!r}?")
    value = field.value
    # pika encodes str, int and bool into a table; a float it cannot encode at all, and a
    # list or mapping is not an argument any RabbitMQ queue reads.
    if isinstance(value, (str, bool)) or (isinstance(value, int) and -2**63 <= value < 2**63):
        return value
    raise Invalid(f"expected a string, an integer or true/false, got {describe(value)}")


def type_problems(arguments: tuple[tuple[str, Any], ...], queue_type: str
                  ) -> list[tuple[KeyPath, str]]:
    """The arguments RabbitMQ would refuse (or silently ignore) on a queue of this type."""
    problems: list[tuple[KeyPath, str]] = []
    given = dict(arguments)
    for name, _ in arguments:
        spec = ARGUMENTS.get(name)
        if spec is not None and queue_type not in spec.queue_types:
            problems.append(((name,), f"not accepted on {queue_type} queues: {spec.why_not}"))
    if queue_type == QUORUM and given.get("x-overflow") == "reject-publish-dlx":
        problems.append((("x-overflow",), "quorum queues do not support reject-publish-dlx: "
                         "RabbitMQ logs a warning and drops the oldest messages instead "
                         "(drop-head); use reject-publish or drop-head"))
    if given.get("x-dead-letter-strategy") == "at-least-once" and \
            given.get("x-overflow") != "reject-publish":
        problems.append((("x-dead-letter-strategy",), "at-least-once needs x-overflow: "
                         "reject-publish (otherwise RabbitMQ falls back to at-most-once)"))
    return problems


# -- bindings ----------------------------------------------------------------------------

EXCHANGE_TYPES = ("direct", "fanout", "topic")


def exchange_name(field: FieldInput) -> str:
    value = field.value
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected an exchange name, got {describe(value)} (the default "
                      "exchange '' cannot be bound to: it reaches every queue by its name)")
    if len(value.encode("utf-8")) > 255:
        raise Invalid("exchange names are at most 255 bytes")
    return value


def routing_key(field: FieldInput) -> str:
    value = field.value
    if value is None:  # `routing_key:` with nothing after it: yii's "" as YAML writes it
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return field.raw() or str(value)  # routing_key: 42 means the text as written
    return _string(field, "a routing key")
