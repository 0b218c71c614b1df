"""What the real broker counts towards a quorum queue's delivery limit, checked against the
rule qsupervisor acts on (broker/returns.py): if a RabbitMQ release changes what counts,
these fail on it before any message is lost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pika
import pytest

from qsupervisor.broker import returns

# Gives a message back: (channel, delivery tag, properties, body) as delivered.
Give = Callable[[Any, int, Any, bytes], None]


@pytest.fixture
def quorum_queue(connection: pika.BlockingConnection, unique: Callable[[str], str]
                 ) -> Iterator[str]:
    name = unique("returns")
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    connection.channel().queue_delete(name)


def _publish(connection: pika.BlockingConnection, queue: str) -> None:
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"{}", pika.BasicProperties(
        message_id="m1", headers={"x-qsupervisor-attempt": 1}))
    channel.close()


def _give_back(connection: pika.BlockingConnection, queue: str, give: Give, times: int) -> None:
    for _ in range(times):
        channel = connection.channel()
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        assert method is not None, "the message is gone"
        give(channel, method.delivery_tag, properties, body)
        if channel.is_open:
            channel.close()


def _take(connection: pika.BlockingConnection, queue: str) -> Any:
    """(properties, body) of the message, removed from the queue; asserts it was alone."""
    channel = connection.channel()
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, "the message is gone"
    assert channel.basic_get(queue, auto_ack=True)[0] is None, "a duplicate is left"
    channel.close()
    return properties, body


def _nack(channel: Any, tag: int, _properties: Any, _body: bytes) -> None:
    channel.basic_nack(tag, requeue=True)


def _reject(channel: Any, tag: int, _properties: Any, _body: bytes) -> None:
    channel.basic_reject(tag, requeue=True)


def _close(channel: Any, _tag: int, _properties: Any, _body: bytes) -> None:
    channel.close()


def test_a_nack_counts_exactly_where_the_rule_says_it_does(
        connection: pika.BlockingConnection, quorum_queue: str) -> None:
    _publish(connection, quorum_queue)
    _give_back(connection, quorum_queue, _nack, times=3)
    properties, _ = _take(connection, quorum_queue)
    version = returns.broker_version(connection)
    free = returns.nack_is_free("quorum", version)
    assert returns.delivery_count(properties) == (0 if free else 3), version


@pytest.mark.parametrize("give", [_reject, _close], ids=["reject", "channel-close"])
def test_a_reject_or_a_closed_channel_counts_on_every_version(
        connection: pika.BlockingConnection, quorum_queue: str, give: Give) -> None:
    _publish(connection, quorum_queue)
    _give_back(connection, quorum_queue, give, times=3)
    properties, _ = _take(connection, quorum_queue)
    assert returns.delivery_count(properties) == 3


def test_a_message_returned_as_a_copy_keeps_its_headers_and_starts_counting_afresh(
        connection: pika.BlockingConnection, quorum_queue: str) -> None:
    _publish(connection, quorum_queue)
    confirms = connection.channel()
    confirms.confirm_delivery()

    def copy_back(channel: Any, tag: int, properties: Any, body: bytes) -> None:
        # As a worker does it: the copy is made from what was delivered, count included.
        returns.return_as_copy(confirms, channel, quorum_queue, tag, properties, body)

    _give_back(connection, quorum_queue, _close, times=1)  # a counted return first
    # More copies than RabbitMQ 4's default limit would allow returns.
    _give_back(connection, quorum_queue, copy_back, times=25)
    properties, body = _take(connection, quorum_queue)
    assert (properties.message_id, body, returns.delivery_count(properties)) == ("m1", b"{}", 0)
    assert properties.headers.get("x-qsupervisor-attempt") == 1
