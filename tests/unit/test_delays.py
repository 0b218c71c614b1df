from __future__ import annotations

import math
from collections import Counter

import pytest

from qsupervisor.broker.declarations import BindingDecl, ExchangeDecl, QueueDecl
from qsupervisor.broker.delays import DelayChain
from qsupervisor.config.model import DelayConfig, ProgramConfig


def chain(levels: int = 5, resolution: float = 0.1) -> DelayChain:
    return DelayChain("orders.delay", "orders", resolution, levels)


def test_routing_key_is_the_binary_digits_of_the_units_most_significant_first() -> None:
    assert chain(levels=5).routing_key(0.5) == "0.0.1.0.1"
    assert chain(levels=5).routing_key(0.1) == "0.0.0.0.1"
    assert chain(levels=5).routing_key(3.1) == "1.1.1.1.1"
    assert chain(levels=3).routing_key(0) == "0.0.0"


@pytest.mark.parametrize("delay, units", [
    (0.3, 3), (0.1 * 3, 3), (0.7, 7), (0.25, 3), (0.01, 1), (1e-9, 1), (1.0, 10), (2.05, 21)])
def test_units_round_up_so_a_message_is_never_early(delay: float, units: int) -> None:
    assert chain(levels=29).units(delay) == units
    assert units * 0.1 >= delay - 1e-9


@pytest.mark.parametrize("delay", [0, 0.0, -1.0, -math.inf])
def test_zero_or_negative_delay_is_zero_units(delay: float) -> None:
    assert chain().units(delay) == 0
    assert chain().routing_key(delay) == "0.0.0.0.0"


def test_the_longest_delay_fits_and_one_unit_more_is_refused_naming_the_maximum() -> None:
    c = chain(levels=5)
    assert c.max_delay == pytest.approx(3.1)
    assert c.units(3.1) == 31
    with pytest.raises(ValueError, match=r"maximum of 3\.1s"):
        c.routing_key(3.2)
    with pytest.raises(ValueError, match="maximum"):
        c.units(math.inf)
    with pytest.raises(ValueError, match="NaN"):
        c.units(math.nan)


def test_default_settings_reach_more_than_a_year() -> None:
    program = ProgramConfig(name="o", handler="m:f", queue="orders")
    c = DelayChain.for_program(program, DelayConfig())
    assert c.levels == 29
    assert c.max_delay >= 366 * 86400
    assert c.exchange == "orders.delay"
    assert len(c.routing_key(366 * 86400).split(".")) == 29


def test_level_names_the_top_exchange_is_the_entry_point() -> None:
    c = chain(levels=5)
    assert [c.level_exchange(k) for k in range(5)] == [
        "orders.delay.00", "orders.delay.01", "orders.delay.02", "orders.delay.03", "orders.delay"]
    assert c.level_queue(0) == "orders.delay.w00"
    assert c.level_queue(4) == "orders.delay.w04"
    assert c.legacy_level_queue(4) == "orders.delay.q04"  # earlier releases' classic ones
    assert c.wait_binding(3) == ("orders.delay.03", "*.1.#")
    with pytest.raises(ValueError):
        c.level_queue(5)


def test_level_ttls_double_and_are_whole_milliseconds_rounded_up() -> None:
    assert [chain(levels=4).level_ttl_ms(k) for k in range(4)] == [100, 200, 400, 800]
    assert chain(levels=3, resolution=0.0125).level_ttl_ms(0) == 13  # 12.5 ms, never early
    assert chain(levels=29).level_ttl_ms(28) == 100 * 2**28


def test_declarations_are_exactly_one_queue_and_one_exchange_per_level() -> None:
    decls = chain(levels=29).declarations()
    kinds = Counter(type(d).__name__ for d in decls)
    assert kinds == {"ExchangeDecl": 29, "QueueDecl": 29, "BindingDecl": 58}
    assert all(isinstance(d, ExchangeDecl) and d.type == "topic" and d.durable
               for d in decls if d.kind == "exchange")
    # Bindings last: a conflict found on a queue stops before any routing changes.
    first_binding = next(i for i, d in enumerate(decls) if d.kind == "binding")
    assert all(d.kind == "binding" for d in decls[first_binding:])


def test_level_queues_are_quorum_with_one_ttl_and_dead_letter_one_level_down_at_least_once(
        ) -> None:
    c = chain(levels=3)
    queues = {d.name: d for d in c.declarations() if isinstance(d, QueueDecl)}
    at_least_once = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    assert queues["orders.delay.w02"].arguments == {
        "x-queue-type": "quorum", "x-message-ttl": 400,
        "x-dead-letter-exchange": "orders.delay.01", **at_least_once}
    assert queues["orders.delay.w01"].arguments["x-dead-letter-exchange"] == "orders.delay.00"
    assert queues["orders.delay.w00"].arguments == {
        "x-queue-type": "quorum", "x-message-ttl": 100, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "orders", **at_least_once}
    assert all(q.durable for q in queues.values())


def test_bindings_route_a_one_digit_into_the_level_queue_and_a_zero_onwards() -> None:
    bindings = [d for d in chain(levels=3).declarations() if isinstance(d, BindingDecl)]
    assert [(b.source, b.routing_key, b.destination, b.to_exchange) for b in bindings] == [
        ("orders.delay", "1.#", "orders.delay.w02", False),
        ("orders.delay", "0.#", "orders.delay.01", True),
        ("orders.delay.01", "*.1.#", "orders.delay.w01", False),
        ("orders.delay.01", "*.0.#", "orders.delay.00", True),
        ("orders.delay.00", "*.*.1.#", "orders.delay.w00", False),
        ("orders.delay.00", "*.*.0.#", "orders", False),
    ]


# A small model of RabbitMQ's topic matching and dead-lettering, to check that the
# declarations really deliver every delay after exactly its units.


def topic_match(pattern: str, key: str) -> bool:
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])
    return match(pattern.split("."), key.split("."))


def simulate(c: DelayChain, routing_key: str) -> int:
    """Units of TTL a message published to the entry exchange waits before reaching the
    destination queue; fails if it is routed to zero or several places."""
    decls = c.declarations()
    ttl_units: dict[str, int] = {q.name: q.arguments["x-message-ttl"] // 100
                                 for q in decls if isinstance(q, QueueDecl)}
    dlx: dict[str, str | None] = {q.name: q.arguments["x-dead-letter-exchange"] or None
                                     for q in decls if isinstance(q, QueueDecl)}
    bindings = [b for b in decls if isinstance(b, BindingDecl)]
    exchange, waited = c.exchange, 0
    for _ in range(3 * c.levels):
        targets = [b for b in bindings
                   if b.source == exchange and topic_match(b.routing_key, routing_key)]
        assert len(targets) == 1, (exchange, routing_key, targets)
        target = targets[0]
        if target.to_exchange:
            exchange = target.destination
        elif target.destination == c.queue:
            return waited
        else:
            waited += ttl_units[target.destination]
            next_exchange = dlx[target.destination]
            if next_exchange is None:  # level 0: default exchange, routing key = the queue
                return waited
            exchange = next_exchange
    raise AssertionError("the message never arrived")


@pytest.mark.parametrize("units", [0, 1, 2, 5, 6, 17, 31])
def test_the_declared_chain_delays_a_message_by_exactly_its_units(units: int) -> None:
    c = chain(levels=5)
    assert simulate(c, c.routing_key(units * 0.1)) == units


def test_names_and_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        DelayChain("", "orders")
    with pytest.raises(ValueError):
        DelayChain("x", "orders", resolution=0)
    with pytest.raises(ValueError):
        DelayChain("x", "orders", levels=0)
