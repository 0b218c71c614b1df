"""Delayed delivery on a stock RabbitMQ: the binary delay-level chain.

The delayed-message plugin is unmaintained, not replicated, and often not installed; a
queue per distinct delay sprawls into thousands of queues. The chain (NServiceBus's delay
infrastructure, kombu's native delayed delivery) has neither problem:

- A delay is a whole number n of units (the resolution, r), written in L binary digits,
  most significant first, as the routing key: n = 5, L = 5 gives "0.0.1.0.1".
- Level k (k = L-1 ... 0) has a topic exchange and a queue whose every message lives
  exactly 2**k units (x-message-ttl), then is dead-lettered to the exchange of level k-1
  with its routing key unchanged. The level 0 queue dead-letters to the program's queue.
- Level k's exchange sends a message whose digit for 2**k is 1 into its queue (to wait),
  and one whose digit is 0 straight on to the next level's exchange.

A message therefore waits in exactly the levels of its 1 digits, n units in total. Each
level queue has one TTL, so a short delay never waits behind a long one (RabbitMQ only
expires messages at the head of a queue), and the number of queues and exchanges is L
whatever delays are used.

The level queues are quorum queues that dead-letter at least once: a level keeps a message
until the next level (or the program's queue) has confirmed it. Classic queues dead-letter
at most once, and a broker that restarts expires what fell due while it was down as soon
as the level queue is back, before the program's queue can take it: the message was gone.
Earlier releases declared classic level queues under other names (LEGACY_LEVEL_QUEUE);
topology.py retires them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsupervisor.broker.declarations import (
    ROLE_DELAY,
    BindingDecl,
    Declaration,
    ExchangeDecl,
    QueueDecl,
)
from qsupervisor.units import format_duration

if TYPE_CHECKING:
    from qsupervisor.config.model import DelayConfig, ProgramConfig

# Digits deeper than this would need delays beyond any use (2**64 units) and routing keys
# RabbitMQ would be slow to match.
MAX_LEVELS = 64
# The classic level queues of earlier releases (see the module's docstring).
LEGACY_LEVEL_QUEUE = "{exchange}.q{k:02d}"


@dataclass(frozen=True)
class DelayChain:
    exchange: str  # the entry point producers publish to: the exchange of level L-1
    queue: str  # where messages arrive when due
    resolution: float = 0.1  # seconds per unit
    levels: int = 29  # L; 29 levels of 0.1 s reach a year

    def __post_init__(self) -> None:
        if not self.exchange or not self.queue:
            raise ValueError("a delay chain needs an entry exchange and a destination queue")
        if not (math.isfinite(self.resolution) and self.resolution > 0):
            raise ValueError(f"the delay resolution must be positive, got {self.resolution!r}")
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"delay levels must be between 1 and {MAX_LEVELS}, got {self.levels}")

    @classmethod
    def for_program(cls, program: ProgramConfig, delay: DelayConfig) -> DelayChain:
        return cls(exchange=program.delay_exchange or f"{program.queue}.delay",
                   queue=program.queue, resolution=delay.resolution, levels=delay.levels)

    @property
    def max_units(self) -> int:
        return (1 << self.levels) - 1

    @property
    def max_delay(self) -> float:
        """The longest delay the chain can hold, in seconds."""
        return self.max_units * self.resolution

    def units(self, delay: float) -> int:
        """The delay as a whole number of units, rounded up so a message is never early."""
        if math.isnan(delay):
            raise ValueError("a delay cannot be NaN")
        if delay <= 0:
            return 0
        units = delay / self.resolution
        # round() first: 0.1 * 3 / 0.1 is 3.0000000000000004 in floating point and must
        # not become 4 units. Six decimals of a unit is far below the broker's precision;
        # still, any positive delay is at least one unit.
        n = max(1, math.ceil(round(units, 6))) if units <= self.max_units + 1 else None
        if n is None or n > self.max_units:
            raise ValueError(
                f"a delay of {_show(delay)} is longer than the maximum of "
                f"{_show(self.max_delay)} ({self.levels} delay levels of {self.resolution:g}s)")
        return n

    def routing_key(self, delay: float) -> str:
        """The routing key that makes the chain hold a message for `delay` seconds."""
        digits = format(self.units(delay), f"0{self.levels}b")
        return ".".join(digits)

    def level_exchange(self, k: int) -> str:
        self._check_level(k)
        # The top level's exchange is the entry point, so producers need one name only.
        return self.exchange if k == self.levels - 1 else f"{self.exchange}.{k:02d}"

    def level_queue(self, k: int) -> str:
        self._check_level(k)
        return f"{self.exchange}.w{k:02d}"

    def legacy_level_queue(self, k: int) -> str:
        """Level k's classic queue as releases before the quorum levels named it."""
        self._check_level(k)
        return LEGACY_LEVEL_QUEUE.format(exchange=self.exchange, k=k)

    def wait_binding(self, k: int) -> tuple[str, str]:
        """(exchange, routing pattern) that sends level k's waiting messages into its queue."""
        return self.level_exchange(k), self._pattern(k, "1")

    def level_ttl_ms(self, k: int) -> int:
        """How long every message stays in level k's queue: 2**k units, in whole ms.

        Rounded up (a resolution like 12.5 ms has no whole-ms TTL at level 0), so the
        chain errs late by at most a millisecond a level, never early.
        """
        self._check_level(k)
        return math.ceil(round((1 << k) * self.resolution * 1000, 6))

    def declarations(self) -> list[Declaration]:
        """Every exchange, queue and binding of the chain, in an order that can be declared.

        The destination queue itself is not included: it belongs to the program. Bindings
        come last, so a conflict found on a queue stops the declaring before any routing
        changes.
        """
        exchanges: list[Declaration] = [ExchangeDecl(self.level_exchange(k))
                                        for k in reversed(range(self.levels))]
        queues: list[Declaration] = [self._queue_decl(k) for k in reversed(range(self.levels))]
        bindings: list[Declaration] = []
        for k in reversed(range(self.levels)):
            bindings.extend(self._bindings(k))
        return exchanges + queues + bindings

    def _queue_decl(self, k: int) -> QueueDecl:
        # Quorum, whatever the program's queue type: only a quorum queue dead-letters at
        # least once (it keeps the message until the target confirmed it), which is what
        # carries a delayed message across a broker restart and a node loss. It costs a
        # Raft group per level (29 per program by default) and a replicated write per hop.
        # At-least-once dead-lettering requires reject-publish overflow; no length limit
        # is set, so nothing is ever rejected.
        arguments: dict[str, object] = {
            "x-queue-type": "quorum",
            "x-message-ttl": self.level_ttl_ms(k),
            "x-dead-letter-exchange": self.level_exchange(k - 1) if k > 0 else "",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if k == 0:  # the last level hands the message to the program's queue
            arguments["x-dead-letter-routing-key"] = self.queue
        return QueueDecl(self.level_queue(k), arguments, role=ROLE_DELAY)

    def _bindings(self, k: int) -> list[Declaration]:
        exchange = self.level_exchange(k)
        wait = BindingDecl(exchange, self.level_queue(k), self._pattern(k, "1"))
        if k > 0:
            onward = BindingDecl(exchange, self.level_exchange(k - 1), self._pattern(k, "0"),
                                 to_exchange=True)
        else:
            onward = BindingDecl(exchange, self.queue, self._pattern(k, "0"))
        return [wait, onward]

    def _pattern(self, k: int, digit: str) -> str:
        """Matches keys whose digit for 2**k is `digit`: it is word number L-1-k."""
        return "*." * (self.levels - 1 - k) + digit + ".#"

    def _check_level(self, k: int) -> None:
        if not 0 <= k < self.levels:
            raise ValueError(f"level {k} is outside 0..{self.levels - 1}")


def _show(seconds: float) -> str:
    if not math.isfinite(seconds):
        return str(seconds)
    return f"{seconds:g}s ({format_duration(seconds)})" if seconds >= 60 else f"{seconds:g}s"

