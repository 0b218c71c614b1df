"""Declaring a program's topology on the real broker: idempotent, and precise on conflict."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from brokerkit import MakeProgram

from qsupervisor.broker import topology
from qsupervisor.broker.declarations import BindingDecl, ExchangeDecl, QueueDecl
from qsupervisor.broker.returns import broker_version
from qsupervisor.broker.topology import Topology
from qsupervisor.config.model import DelayConfig


def exists(connection: pika.BlockingConnection, decl: object) -> bool:
    channel = connection.channel()
    try:
        if isinstance(decl, QueueDecl):
            channel.queue_declare(decl.name, passive=True)
        elif isinstance(decl, ExchangeDecl):
            channel.exchange_declare(decl.name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    channel.close()
    return True


def test_declaring_twice_is_idempotent_and_creates_everything(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program()
    first = topology.declare(connection.channel, program, DelayConfig())
    second = topology.declare(connection.channel, program, DelayConfig())
    assert first == second
    decls = first.declarations()
    assert all(exists(connection, d) for d in decls if not isinstance(d, BindingDecl))
    assert sum(isinstance(d, QueueDecl) for d in decls) == 2 + 29
    assert topology.queue_depth(connection.channel, program.queue) == (0, 0)
    assert topology.queue_depth(connection.channel, program.dead_letter_queue) == (0, 0)


def test_a_queue_of_another_type_is_a_conflict_naming_the_queue_and_argument(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="quorum")
    connection.channel().queue_declare(program.queue, durable=True,
                                       arguments={"x-queue-type": "classic"})
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    conflict = info.value
    assert (conflict.kind, conflict.name) == ("queue", program.queue)
    assert conflict.argument == "x-queue-type"
    assert (conflict.current, conflict.wanted) == ("classic", "quorum")
    message = str(conflict)
    assert f"queue '{program.queue}'" in message and "x-queue-type" in message
    assert "queue_type: classic" in message  # the hint
    assert connection.is_open  # only the declaring channel was closed


def test_a_delay_chain_declared_with_another_resolution_is_a_conflict_with_a_hint(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig(resolution=0.1))
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig(resolution=0.2))
    conflict = info.value
    assert conflict.argument == "x-message-ttl"
    assert conflict.name.startswith(f"{program.delay_exchange}.w")
    assert "delay_exchange" in conflict.hint


def test_a_queue_declared_without_a_type_is_reported_as_the_broker_records_it(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    """3.x keeps no x-queue-type on an untyped (classic) queue; 4.x records 'classic'."""
    program = make_program(queue_type="quorum")
    connection.channel().queue_declare(program.queue, durable=True)  # classic, no arguments
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    if broker_version(connection) >= (4,):
        assert (info.value.current, info.value.wanted) == ("classic", "quorum")
        assert "x-queue-type 'classic'" in str(info.value)
    else:
        assert (info.value.current, info.value.wanted) == (None, "quorum")
        assert "x-queue-type unset" in str(info.value)
    assert "queue_type: classic" in info.value.hint


def test_a_quorum_dead_letter_queue_is_declared_without_a_delivery_limit(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    """Returns to it never count against a limit: redeclaring it with RabbitMQ 4's default
    of 20 is refused as inequivalent, naming the value it has."""
    program = make_program(queue_type="quorum")
    topology.declare(connection.channel, program, DelayConfig())
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.queue_declare(program.dead_letter_queue, durable=True,
                              arguments={"x-queue-type": "quorum", "x-delivery-limit": 20})
    # (3.x and 4.x word the values differently; the parser reads both.)
    assert topology.parse_inequivalent(str(info.value.reply_text)) == (
        "x-delivery-limit", str(topology.UNLIMITED_DELIVERIES), "20")
    assert not topology.delivery_limited(connection.channel, Topology.for_program(
        program, DelayConfig()))


def test_a_dead_letter_queue_an_earlier_release_declared_is_kept_as_it_is(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="quorum")
    connection.channel().queue_declare(program.dead_letter_queue, durable=True,
                                       arguments={"x-queue-type": "quorum"})
    kept = []
    layout = topology.declare(connection.channel, program, DelayConfig(),
                              kept=lambda queue, why: kept.append((queue, why)))
    [(queue, why)] = kept
    assert queue == program.dead_letter_queue and "x-delivery-limit" in why
    assert topology.delivery_limited(connection.channel, layout)
    # Everything after it was declared too.
    assert topology.queue_depth(connection.channel, layout.chain.level_queue(0)) == (0, 0)


def test_a_dead_letter_queue_with_a_limit_of_its_own_is_a_conflict_naming_it(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="quorum")
    connection.channel().queue_declare(
        program.dead_letter_queue, durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
    with pytest.raises(topology.TopologyConflict) as info:
        topology.declare(connection.channel, program, DelayConfig())
    assert (info.value.name, info.value.argument, info.value.current) == (
        program.dead_letter_queue, "x-delivery-limit", "5")


def test_a_classic_dead_letter_queue_has_no_delivery_limit_argument(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    layout = topology.declare(connection.channel, program, DelayConfig())
    assert dict(layout.dead_letter_declaration().arguments) == {"x-queue-type": "classic"}
    assert not topology.delivery_limited(connection.channel, layout)


def test_queue_depth_counts_ready_messages_and_is_none_for_a_missing_queue(
        connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", program.queue, b"{}", mandatory=True)
    assert topology.queue_depth(connection.channel, program.queue) == (1, 0)
    assert topology.queue_depth(connection.channel, program.queue + ".missing") is None


@pytest.mark.parametrize("reply, parsed", [
    ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'a b' in vhost '/': "
     "received 'quorum' but current is 'classic'", ("x-queue-type", "classic", "quorum")),
    ("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': "
     "received the value '200' of type 'signedint' but current is none",
     ("x-message-ttl", None, "200")),
    ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost 'v': "
     "received 'topic' but current is 'direct'", ("type", "direct", "topic")),
    ("PRECONDITION_FAILED - something else", (None, None, None)),
])
def test_parse_inequivalent_reads_every_shape_of_reply(reply: str, parsed: tuple) -> None:
    assert topology.parse_inequivalent(reply) == parsed
