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
