"""Rules that involve more than one key, checked once every key has parsed on its own.

A rule only runs when every key it reads either parsed or was left out (and so has its
default): a key that failed is already reported, and judging its default instead of what
the user wrote would add a second, wrong problem.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Callable

from . import queueargs, schema
from .fields import show_duration
from .model import WorkerBounds
from .problems import KeyPath

Problems = list[tuple[KeyPath, str]]

# The names a program derives from its queue when the file does not set them.
_DERIVED_NAMES: tuple[tuple[str, str, Callable[[str], str | None]], ...] = (
    ("delay_exchange", ".delay", schema.delay_exchange_problem),
    ("dead_letter_queue", ".failed", schema.queue_name_problem),
)


def with_derived_names(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    """`values` with queue, delay_exchange and dead_letter_queue filled in."""
    filled = dict(values)
    bounds = filled.get("workers")
    if isinstance(bounds, WorkerBounds):  # autoscaled: it starts at min
        filled["workers"], filled["workers_max"] = bounds.min, bounds.max
    filled.setdefault("queue", name)
    if "command" in filled:
        # A command gets the body as it came: checking it is JSON is asked for, not assumed
        # (a PHP job queue sends serialize() output, which would all be dead-lettered).
        filled.setdefault("format", "raw")
    for key, suffix, _ in _DERIVED_NAMES:
        filled.setdefault(key, filled["queue"] + suffix)
    return filled


def program_problems(
    name: str, values: Mapping[str, Any], written: Collection[str], consumer_timeout: float | None
) -> Problems:
    """Problems between a program's keys (and the daemon's consumer_timeout).

    `values` holds the keys that parsed, `written` every key in the file;
    `consumer_timeout` is None when the daemon's own value is unknown (it failed).
    """
    def known(key: str) -> bool:
        return key in values or key not in written

    problems: Problems = []
    if "handler" in written and "command" in written:
        problems.append((("command",), "set either handler (a Python callable) or command "
                                       "(a program run for each job), not both"))
    elif "handler" not in written and "command" not in written:
        problems.append(((), "missing required key 'handler' (a Python callable, "
                             "'module:callable') or 'command' (a program run for each job)"))
    if known("timeout") and consumer_timeout is not None:
        problems.extend(_timeout_within_consumer_timeout(values.get("timeout", 0.0), consumer_timeout))
    if "queue_arguments" in values and known("queue_type"):
        problems.extend((("queue_arguments",) + at, message) for at, message in
                        queueargs.type_problems(values["queue_arguments"],
                                                values.get("queue_type", "quorum")))
    if "bindings" in values and known("queue") and known("delay_exchange"):
        problems.extend(_bindings_not_own_exchanges(values, name))
    if "queue" not in written and schema.queue_name_problem(name):
        # The program name is checked as a program name only; as a queue name it can
        # still be too long or reserved, and everything derived from it with it.
        problems.append(((), f"the default queue (the program name) is unusable: "
                             f"{schema.queue_name_problem(name)}; set queue"))
    elif known("queue"):
        queue = values.get("queue", name)
        problems.extend(_names_differ_from_queue(values, queue))
        problems.extend(_derived_names_valid(values, written, queue))
    return problems


def _bindings_not_own_exchanges(values: Mapping[str, Any], name: str) -> Problems:
    """The delay chain's exchanges are the program's own: a binding to one would put
    retries (routed by their delay digits) into the queue before they are due."""
    own = values.get("delay_exchange", values.get("queue", name) + ".delay")
    return [(("bindings", index, "exchange"), f"'{binding.exchange}' is the delay exchange of "
             "this program (its retries and delayed messages pass through it); bind to the "
             "exchange the producers publish to")
            for index, binding in enumerate(values["bindings"])
            if binding.exchange == own or binding.exchange.startswith(own + ".w")]


def _timeout_within_consumer_timeout(timeout: float, consumer_timeout: float) -> Problems:
    # RabbitMQ closes the channel of a delivery left unacked past consumer_timeout: the job
    # would be redelivered (run twice) while still running, and its ack would fail.
    if timeout <= 0 or consumer_timeout <= 0 or timeout < consumer_timeout:
        return []
    message = (
        f"{show_duration(timeout)} is at or above the broker's consumer_timeout "
        f"({show_duration(consumer_timeout)}); RabbitMQ would close the channel before the job "
        "ends: lower timeout, or raise consumer_timeout on the broker and in "
        "qsupervisord.consumer_timeout"
    )
    return [(("timeout",), message)]


def _names_differ_from_queue(values: Mapping[str, Any], queue: str) -> Problems:
    problems: Problems = []
    if values.get("dead_letter_queue") == queue:
        problems.append((("dead_letter_queue",), f"must differ from the program's queue {queue!r}: "
                         "failed messages would be consumed again as new ones"))
    if values.get("delay_exchange") == queue:
        problems.append((("delay_exchange",), f"must differ from the program's queue {queue!r}: "
                         "the delay levels are named after it and must not be mistaken for it"))
    return problems


def _derived_names_valid(values: Mapping[str, Any], written: Collection[str], queue: str) -> Problems:
    """A long queue name can make its default '<queue>.failed' too long to declare."""
    problems: Problems = []
    at: KeyPath = ("queue",) if "queue" in written else ()
    for key, suffix, problem_of in _DERIVED_NAMES:
        if key in written:
            continue
        problem = problem_of(queue + suffix)
        if problem:
            problems.append((at, f"the default {key} '<queue>{suffix}' is unusable: {problem}; "
                                 f"set {key} explicitly"))
    return problems
