"""Delayed delivery through the delay-level chain, on the real broker."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pika
from brokerkit import MakeProgram

from qsupervisor.broker import messages, topology
from qsupervisor.broker.delays import DelayChain
from qsupervisor.broker.publisher import Publisher, publish_delayed
from qsupervisor.config.model import DelayConfig

RESOLUTION = DelayConfig().resolution
# A correctness bound, not a benchmark: a message may be late by the rounding up to the
# resolution plus the broker's expiry and routing overhead at each level it waits in.
LATENESS_BOUND = RESOLUTION + 0.3


@dataclass
class Arrival:
    payload: Any
    monotonic: float
    wall_ms: int
    headers: dict[str, Any]


def receive(connection: pika.BlockingConnection, queue: str, count: int,
            timeout: float = 15.0) -> list[Arrival]:
    arrivals: list[Arrival] = []
    channel = connection.channel()

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        arrivals.append(Arrival(messages.decode(body), time.monotonic(), messages.now_ms(),
                                dict(properties.headers or {})))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + timeout
    while len(arrivals) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.01)
    channel.close()
    return arrivals


def test_delays_published_long_first_each_arrive_when_due_within_the_bound(
        connection: pika.BlockingConnection, make_program: MakeProgram, broker_url: str) -> None:
    program = make_program()
    topology.declare(connection.channel, program, DelayConfig())
    delays = [3.0, 2.0, 1.0, 0.5, 0.3]  # the longest first: no head-of-line blocking
    published: dict[float, float] = {}
    with Publisher(broker_url) as publisher:
        for delay in delays:
            published[delay] = time.monotonic()
            publisher.publish(program.queue, {"delay": delay}, delay=delay)
    arrivals = receive(connection, program.queue, len(delays))
    assert sorted(a.payload["delay"] for a in arrivals) == sorted(delays)
    for arrival in arrivals:
        delay = arrival.payload["delay"]
        waited = arrival.monotonic - published[delay]
        assert waited >= delay, f"{delay}s delay arrived early, after {waited:.3f}s"
        assert waited <= delay + LATENESS_BOUND, f"{delay}s delay arrived after {waited:.3f}s"
        assert arrival.wall_ms >= arrival.headers[messages.DUE_AT]
    # Arrival order is delay order, although publish order was the reverse.
    assert [a.payload["delay"] for a in arrivals] == sorted(delays)


def test_a_message_that_went_through_the_chain_can_be_delayed_again(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    # The first trip leaves x-death headers naming the level queues; RabbitMQ would drop a
    # second trip through the same levels as a dead-letter cycle unless they are removed.
    program = make_program()
    layout = topology.declare(connection.channel, program, DelayConfig())
    channel = connection.channel()
    channel.confirm_delivery()
    props = messages.message_properties(messages.CONTENT_TYPE_JSON,
                                        headers=messages.first_publish_headers(None))
    publish_delayed(channel, layout.chain, b'{"trip": 1}', props, 0.3)
    [first] = receive(connection, program.queue, 1)
    assert "x-death" in first.headers
    retry = messages.message_properties(messages.CONTENT_TYPE_JSON,
                                        headers=messages.retry_headers(first.headers, 0.3))
    retry.headers.update({"x-death": first.headers["x-death"]})  # as a careless caller would
    publish_delayed(channel, layout.chain, b'{"trip": 2}', retry, 0.3)
    arrivals = receive(connection, program.queue, 1, timeout=5.0)
    assert len(arrivals) == 1, "the second trip was dropped as a dead-letter cycle"
    second = arrivals[0]
    assert second.payload == {"trip": 2}
    assert second.headers[messages.ATTEMPT] == 2


def test_a_zero_delay_through_publish_delayed_goes_straight_to_the_queue(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    channel = connection.channel()
    channel.confirm_delivery()
    chain = DelayChain.for_program(program, DelayConfig())
    props = messages.message_properties(messages.CONTENT_TYPE_JSON, headers={messages.DUE_AT: 1})
    publish_delayed(channel, chain, b"{}", props, 0)
    [arrival] = receive(connection, program.queue, 1, timeout=5.0)
    assert messages.DUE_AT not in arrival.headers


def _declare_legacy_chain(connection: pika.BlockingConnection, chain: DelayChain) -> None:
    """The classic level queues and their bindings as releases before the quorum levels
    declared them (the exchanges are the same)."""
    channel = connection.channel()
    for k in range(chain.levels):
        arguments: dict[str, Any] = {"x-queue-type": "classic",
                                     "x-message-ttl": chain.level_ttl_ms(k),
                                     "x-dead-letter-exchange":
                                         chain.level_exchange(k - 1) if k > 0 else ""}
        if k == 0:
            arguments["x-dead-letter-routing-key"] = chain.queue
        channel.queue_declare(chain.legacy_level_queue(k), durable=True, arguments=arguments)
        channel.queue_bind(chain.legacy_level_queue(k), *chain.wait_binding(k))
    channel.close()


def test_an_earlier_releases_classic_levels_are_retired_without_losing_what_they_hold(
        connection: pika.BlockingConnection, make_program: MakeProgram, broker_url: str,
        cleanup: Any) -> None:
    program = make_program()
    chain = DelayChain.for_program(program, DelayConfig())
    cleanup.queues.extend(chain.legacy_level_queue(k) for k in range(chain.levels))
    # An earlier release ran: its chain holds a message waiting 3 s (levels 4 and 3 of
    # 0.1 s units hold 1.6 and 0.8 s: 30 units is binary 11110).
    channel = connection.channel()
    channel.queue_declare(program.queue, durable=True, arguments={"x-queue-type": "quorum"})
    for k in reversed(range(chain.levels)):
        channel.exchange_declare(chain.level_exchange(k), "topic", durable=True)
    _declare_legacy_chain(connection, chain)
    for k in reversed(range(1, chain.levels)):
        channel.exchange_bind(chain.level_exchange(k - 1), chain.level_exchange(k),
                              "*." * (chain.levels - 1 - k) + "0.#")
    channel.queue_bind(program.queue, chain.level_exchange(0), "*." * (chain.levels - 1) + "0.#")
    channel.confirm_delivery()
    publish_delayed(channel, chain, b'{"n": "old"}', pika.BasicProperties(delivery_mode=2), 3.0)

    kept: list[tuple[str, str]] = []
    topology.declare(connection.channel, program, DelayConfig(),
                     kept=lambda queue, why: kept.append((queue, why)))
    assert [queue for queue, _ in kept] == [chain.legacy_level_queue(4)]  # the one holding it
    assert "receives no more messages" in kept[0][1]
    with Publisher(broker_url) as publisher:  # a new message goes through the new levels only
        publisher.publish(program.queue, {"n": "new"}, delay=3.0)
    arrivals = receive(connection, program.queue, 2, timeout=20.0)
    assert sorted(a.payload["n"] for a in arrivals) == ["new", "old"]
    assert receive(connection, program.queue, 1, timeout=2.0) == []  # nothing twice
    # Empty, the earlier levels go at the next start; the one that held the message too.
    topology.declare(connection.channel, program, DelayConfig())
    for k in range(chain.levels):
        assert topology.queue_depth(connection.channel, chain.legacy_level_queue(k)) is None
