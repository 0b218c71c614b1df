"""Exchanges, queues and bindings as plain data.

Describing the topology as data (rather than as a sequence of pika calls) lets the same
list drive the declaring code, the tests and the documentation, and lets a conflict be
reported against the exact object that caused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

# What an object is for; a conflict's hint depends on it (a program queue and a delay
# level queue are fixed in different ways).
ROLE_QUEUE = "program queue"
ROLE_DEAD_LETTER = "dead-letter queue"
ROLE_DELAY = "delay chain"
ROLE_BOUND = "bound exchange"  # an exchange of the program's `bindings`, shared with producers


@dataclass(frozen=True)
class ExchangeDecl:
    name: str
    type: str = "topic"
    durable: bool = True
    role: str = ROLE_DELAY

    kind = "exchange"


@dataclass(frozen=True)
class QueueDecl:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    durable: bool = True
    role: str = ROLE_DELAY
    # The arguments an earlier release of qsupervisor declared this queue with: a queue
    # that exists with these is used as it is (arguments cannot change once declared).
    earlier: Mapping[str, Any] | None = None

    kind = "queue"


@dataclass(frozen=True)
class BindingDecl:
    source: str  # an exchange
    destination: str  # a queue, or an exchange when to_exchange
    routing_key: str  # a topic pattern
    to_exchange: bool = False
    role: str = ROLE_DELAY

    kind = "binding"


Declaration = Union[ExchangeDecl, QueueDecl, BindingDecl]
