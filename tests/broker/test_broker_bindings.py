"""queue_arguments and bindings on the real broker, against a queue and an exchange
declared the way yii2-queue's AMQP driver (yii\\queue\\amqp_interop) declares them: a
durable classic queue with {x-max-priority: 10} and no x-queue-type, a durable direct
exchange, and a binding with the routing key ""."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Callable

import pika
import pika.exceptions
import pytest
from brokerkit import Cleanup, MakeProgram

from qsupervisor.broker import topology
from qsupervisor.config.model import Binding, DelayConfig, ProgramConfig

YII_ARGUMENTS = {"x-max-priority": 10}


def yii_declares(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str,
                 exchange: str) -> None:
    """What yii2-queue does before every push and listen (setupBroker)."""
    channel.queue_declare(queue, durable=True, arguments=dict(YII_ARGUMENTS))
    channel.exchange_declare(exchange, "direct", durable=True)
    channel.queue_bind(queue, exchange, "")


@pytest.fixture
def exchange(unique: Callable[[str], str], cleanup: Cleanup) -> Iterator[str]:
    name = unique("yii-exchange")
    cleanup.exchanges.append(name)
    yield name


def yii_program(make_program: MakeProgram, exchange: str, **changes: object) -> ProgramConfig:
    program = make_program(queue_type="classic")
    settings: dict[str, object] = {
        "queue_arguments": (("x-max-priority", 10),),
        "bindings": (Binding(exchange=exchange, routing_key="", type="direct"),)}
    settings.update(changes)
    return dataclasses.replace(program, **settings)


def routed(connection: pika.BlockingConnection, exchange: str, queue: str) -> int:
    """Publish one message to `exchange` with yii's routing key; the queue's depth after."""
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(exchange, "", b"{}", pika.BasicProperties(delivery_mode=2),
                          mandatory=True)
    depth = channel.queue_declare(queue, passive=True).method.message_count
    channel.close()
    return int(depth)


def test_a_program_declares_a_yii_queue_in_place_and_yii_declares_it_again(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    """yii first: qsupervisor's x-queue-type 'classic' is equivalent to none; then yii's
    declaration, without x-queue-type, is accepted by the queue qsupervisor declared."""
    program = yii_program(make_program, exchange)
    yii_declares(connection.channel(), program.queue, exchange)
    topology.declare(connection.channel, program, DelayConfig())
    yii_declares(connection.channel(), program.queue, exchange)  # raises if refused
    assert routed(connection, exchange, program.queue) == 1


def test_a_program_declared_first_takes_yii_declarations_and_is_bound(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    program = yii_program(make_program, exchange)
    topology.declare(connection.channel, program, DelayConfig())  # the exchange too
    assert routed(connection, exchange, program.queue) == 1  # bound before yii ran at all
    yii_declares(connection.channel(), program.queue, exchange)
    topology.declare(connection.channel, program, DelayConfig())  # idempotent after yii
    assert routed(connection, exchange, program.queue) == 2


def test_a_yii_queue_without_queue_arguments_is_a_conflict_saying_what_to_add(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    program = yii_program(make_program, exchange, queue_arguments=())
    yii_declares(connection.channel(), program.queue, exchange)
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    conflict = info.value
    assert (conflict.kind, conflict.name, conflict.argument) == (
        "queue", program.queue, "x-max-priority")
    assert (conflict.current, conflict.wanted) == ("10", None)
    assert "add `queue_arguments: {x-max-priority: 10}`" in str(conflict), str(conflict)


def test_another_priority_is_a_conflict_naming_both_values(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    program = yii_program(make_program, exchange, queue_arguments=(("x-max-priority", 5),))
    yii_declares(connection.channel(), program.queue, exchange)
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    assert (info.value.current, info.value.wanted) == ("10", "5")
    assert "set `queue_arguments: {x-max-priority: 10}`" in str(info.value), str(info.value)


def test_an_argument_the_queue_lacks_is_a_conflict_saying_to_remove_it(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    program = yii_program(make_program, exchange, queue_arguments=(
        ("x-max-priority", 10), ("x-message-ttl", 60000)))
    yii_declares(connection.channel(), program.queue, exchange)
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    assert info.value.argument == "x-message-ttl" and info.value.current is None
    assert "exists without x-message-ttl: remove x-message-ttl" in str(info.value)


def test_an_exchange_of_another_type_is_a_conflict_naming_the_type_to_set(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    connection.channel().exchange_declare(exchange, "topic", durable=True)
    program = yii_program(make_program, exchange)
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    conflict = info.value
    assert (conflict.kind, conflict.name, conflict.argument) == ("exchange", exchange, "type")
    assert (conflict.current, conflict.wanted) == ("topic", "direct")
    assert "set `type: topic`" in str(conflict), str(conflict)


def test_a_binding_to_a_broker_exchange_is_not_declared_only_bound(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    program = dataclasses.replace(program, bindings=(
        Binding(exchange="amq.direct", routing_key=program.queue),))
    topology.declare(connection.channel, program, DelayConfig())  # 403 if declared
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("amq.direct", program.queue, b"{}", mandatory=True)
    assert topology.queue_depth(connection.channel, program.queue) == (1, 0)


def test_messages_come_out_of_a_priority_queue_highest_priority_first(
        connection: pika.BlockingConnection, make_program: MakeProgram, exchange: str) -> None:
    program = yii_program(make_program, exchange)
    topology.declare(connection.channel, program, DelayConfig())
    channel = connection.channel()
    channel.confirm_delivery()
    for priority in (1, 9, None, 5, 10, 3):
        channel.basic_publish(exchange, "", str(priority).encode(),
                              pika.BasicProperties(priority=priority), mandatory=True)
    order = []
    while True:
        method, _, body = channel.basic_get(program.queue, auto_ack=True)
        if method is None:
            break
        order.append(body.decode())
    assert order == ["10", "9", "5", "3", "1", "None"]
