"""Publishing, made exact (#12): headers of every type arrive as sent, a value AMQP cannot
carry is refused before anything is sent with the connection kept, a missing queue names
the virtual host and where the broker URL came from, and format, message_id and priority."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pika
import pytest
from brokerkit import MakeProgram

import qsupervisor
from qsupervisor.broker import topology
from qsupervisor.broker.connection import BROKER_ENV
from qsupervisor.broker.publisher import Publisher, PublishError, UnencodableMessage
from qsupervisor.config.model import DelayConfig


def get(connection: pika.BlockingConnection, queue: str) -> tuple[Any, bytes]:
    method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    assert method is not None, f"no message in {queue}"
    return properties, body


HEADERS: dict[str, Any] = {
    "price": 2.5, "tiny": -5, "short": -1000, "big": -(2 ** 40), "flag": True,
    "text": "héllo", "blob": b"\x00\xff", "money": decimal.Decimal("19.90"),
    "when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    "nested": {"ratio": 0.25, "list": [1.5, -2, "x", None]}, "nothing": None,
}


def test_headers_of_every_python_type_arrive_as_sent(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    qsupervisor.publish(program.queue, {}, headers=HEADERS, broker=broker_url)
    properties, _ = get(connection, program.queue)
    received = {k: v for k, v in properties.headers.items() if not k.startswith("x-")}
    assert received == HEADERS
    assert str(received["money"]) == "19.90"
    assert type(received["price"]) is float and type(received["nested"]["ratio"]) is float


def test_an_unencodable_header_is_refused_before_sending_and_the_connection_stays(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    with Publisher(broker_url) as publisher:
        channel = publisher._channel
        for bad, match in (({"when": {1, 2}}, r"headers\['when'\]: set has no AMQP"),
                           ({"n": 2 ** 64}, r"headers\['n'\]: .* signed 64-bit")):
            with pytest.raises(UnencodableMessage, match=match) as caught:
                publisher.publish(program.queue, {"bad": True}, headers=bad)
            assert isinstance(caught.value, ValueError)
            assert "lost the connection" not in str(caught.value)
        with pytest.raises(ValueError, match="priority must be a whole number from 0 to 255"):
            publisher.publish(program.queue, {}, priority=256)
        with pytest.raises(ValueError, match="message_id is at most 255 bytes"):
            publisher.publish(program.queue, {}, message_id="x" * 256)
        publisher.publish(program.queue, {"good": True}, headers={"price": 2.5})
        assert publisher._channel is channel and channel.is_open  # same channel throughout
    properties, body = get(connection, program.queue)
    assert body == b'{"good":true}' and properties.headers["price"] == 2.5
    assert connection.channel().queue_declare(program.queue, passive=True).method.message_count == 0


def test_format_message_id_and_priority(
        broker_url: str, connection: pika.BlockingConnection, make_program: MakeProgram) -> None:
    program = make_program(queue_type="classic")
    topology.declare(connection.channel, program, DelayConfig())
    given = qsupervisor.publish(program.queue, b"\x00raw", format="raw", message_id="job-7",
                                priority=9, broker=broker_url)
    assert given == "job-7"
    with Publisher(broker_url) as publisher:
        publisher.publish(program.queue, {"n": 2}, format="json", priority=0)
        with pytest.raises(ValueError, match="disagree"):
            publisher.publish(program.queue, "x", format="raw", fmt="json")
    properties, body = get(connection, program.queue)
    assert (body, properties.message_id, properties.priority) == (b"\x00raw", "job-7", 9)
    assert properties.content_type == "application/octet-stream"
    properties, body = get(connection, program.queue)
    assert (body, properties.priority, properties.content_type) == (
        b'{"n":2}', 0, "application/json")


def test_a_missing_queue_names_the_virtual_host_and_where_the_url_came_from(
        broker_url: str, unique, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = unique("missing")
    with pytest.raises(PublishError) as caught:
        qsupervisor.publish(missing, {}, broker=broker_url)
    assert (f"queue '{missing}' does not exist in virtual host '/' of "
            "amqp://guest@127.0.0.1:5672/%2F (from the broker argument)") in str(caught.value)
    monkeypatch.setenv(BROKER_ENV, broker_url)
    with pytest.raises(PublishError, match=r"virtual host '/' .*\(from \$QSUPERVISOR_BROKER\)"):
        qsupervisor.publish(missing, {})
    monkeypatch.delenv(BROKER_ENV)
    with pytest.raises(PublishError, match=r"\(from the built-in default\)"):
        qsupervisor.publish(missing, {})
    with Publisher(broker_url) as publisher:
        with pytest.raises(PublishError, match=r"404 .*virtual host '/'|virtual host '/'.*404"):
            publisher.publish(missing, {}, delay=1)  # no delay exchange either


@pytest.mark.parametrize("url, message", [
    ("http://guest:guest@127.0.0.1:5672/", "got a URL with scheme 'http'"),
    ("127.0.0.1:5672", "got a URL with no scheme"),
    (["amqp://a/x", "amqp://b/y"], "item 1: virtual host 'y' differs from item 0's 'x'"),
])
def test_the_python_api_checks_the_broker_url_as_the_configuration_does(
        url: Any, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=message):
        qsupervisor.publish("q", {}, broker=url)
    if isinstance(url, str):
        monkeypatch.setenv(BROKER_ENV, url)
        with pytest.raises(ValueError, match=r"from \$QSUPERVISOR_BROKER: expected an amqp"):
            Publisher()
