"""Publishing with confirms and the mandatory flag: never a silent drop."""

from __future__ import annotations

import socket

import pika
import pytest
from brokerkit import MakeProgram

import qsupervisor
from qsupervisor.broker import messages, topology
from qsupervisor.broker.publisher import Publisher, PublishError
from qsupervisor.config.model import DelayConfig


def get(connection: pika.BlockingConnection, queue: str) -> tuple:
    method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    assert method is not None, f"no message in {queue}"
    return properties, body


def test_an_unroutable_message_raises_publish_error(broker_url: str, unique) -> None:
    missing = unique("missing")
    with Publisher(broker_url) as publisher:
        with pytest.raises(PublishError, match=f"unroutable.*{missing}"):
            publisher.publish(missing, {"lost": False})


def test_a_missing_delay_chain_raises_and_the_publisher_recovers(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    connection.channel().queue_declare(program.queue, durable=True)  # the queue, no chain
    with Publisher(broker_url) as publisher:
        with pytest.raises(PublishError, match="404"):
            publisher.publish(program.queue, {}, delay=1)
        publisher.publish(program.queue, {"after": "error"})  # a fresh channel
    assert get(connection, program.queue)[1] == b'{"after":"error"}'


def test_published_messages_carry_the_documented_properties_and_headers(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program()
    topology.declare(connection.channel, program, DelayConfig())
    before = messages.now_ms()
    message_id = qsupervisor.publish(program.queue, {"n": 1}, headers={"tenant": "acme"},
                                     broker=broker_url)
    properties, body = get(connection, program.queue)
    assert body == b'{"n":1}'
    assert properties.message_id == message_id
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.headers["tenant"] == "acme"
    assert properties.headers[messages.ATTEMPT] == 1
    assert properties.headers[messages.ENQUEUED_AT] >= before


def test_a_raw_payload_keeps_its_bytes_and_a_given_id(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    with Publisher(broker_url) as publisher:
        assert publisher.publish(program.queue, b"\x00\xff", fmt="raw", message_id="m-1") == "m-1"
    properties, body = get(connection, program.queue)
    assert (body, properties.content_type) == (b"\x00\xff", "application/octet-stream")


def test_a_delay_beyond_the_chain_is_refused_before_publishing(broker_url: str, unique) -> None:
    with Publisher(broker_url) as publisher:
        with pytest.raises(ValueError, match="maximum"):
            publisher.publish(unique("q"), {}, delay=10 * 366 * 86400)


def test_an_unreachable_broker_is_a_publish_error_without_the_password() -> None:
    with pytest.raises(PublishError) as info:
        Publisher("amqp://guest:s3cret@127.0.0.1:1/%2F")
    assert "127.0.0.1:1" in str(info.value) and "s3cret" not in str(info.value)


def test_the_publisher_reconnects_after_losing_its_connection(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    with Publisher(broker_url) as publisher:
        publisher.publish(program.queue, 1)
        publisher._connection.close()  # as if the broker had closed it (white-box)
        publisher.publish(program.queue, 2)
    assert topology.queue_depth(connection.channel, program.queue) == (2, 0)


def test_a_node_that_refuses_is_passed_over_for_the_next(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: a node that is down
    down = f"amqp://guest:guest@127.0.0.1:{refusing.getsockname()[1]}/%2F"
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    try:
        for order in ([down, broker_url], [broker_url, down]):
            qsupervisor.publish(program.queue, {"order": order}, broker=order)
            with Publisher(order) as publisher:
                publisher.publish(program.queue, {"order": order})
    finally:
        refusing.close()
    for _ in range(4):
        get(connection, program.queue)
