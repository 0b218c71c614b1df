"""The nodes of one cluster (broker/connection.py): the order a process tries them in, a
node that refuses going to the back, and the URLs $QSUPERVISOR_BROKER may list. No broker
is needed: nodes are ports that refuse connections."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from qsupervisor.broker import connection
from qsupervisor.broker.connection import BrokerNodes, BrokerUnreachable


def keep(order: list[str]) -> None:
    """A 'shuffle' that keeps the written order, so a test can name the first node."""


@pytest.fixture
def refusing_ports() -> Iterator[list[int]]:
    socks = [socket.socket() for _ in range(3)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    yield [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()


def test_each_process_shuffles_the_nodes_and_lists_each_once() -> None:
    urls = [f"amqp://rabbit-{n}/" for n in range(8)]
    orders = {BrokerNodes([*urls, urls[0]]).urls for _ in range(50)}
    assert all(sorted(order) == sorted(urls) for order in orders)
    assert len(orders) > 1  # 50 draws of 8! orders: the same one every time is no shuffle


def test_a_node_demoted_is_tried_last() -> None:
    nodes = BrokerNodes(["amqp://a/", "amqp://b/", "amqp://c/"], shuffle=keep)
    nodes.demote("amqp://a/")
    assert nodes.urls == ("amqp://b/", "amqp://c/", "amqp://a/")
    nodes.demote("amqp://unknown/")
    assert nodes.urls == ("amqp://b/", "amqp://c/", "amqp://a/")


def test_no_node_answering_names_each_node_and_why(refusing_ports: list[int]) -> None:
    urls = [f"amqp://guest:secret@127.0.0.1:{port}/%2F" for port in refusing_ports]
    nodes = BrokerNodes(urls, shuffle=keep)
    with pytest.raises(BrokerUnreachable) as caught:
        nodes.connect(name="test")
    shown = [f"amqp://guest@127.0.0.1:{port}/%2F: connection refused" for port in refusing_ports]
    assert str(caught.value) == (
        f"cannot connect to any of the 3 broker nodes ({'; '.join(shown)})")
    assert "secret" not in str(caught.value)
    assert nodes.urls == tuple(urls)  # each went to the back in turn: the same order


def test_one_node_keeps_the_one_line_message(refusing_ports: list[int]) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{refusing_ports[0]}/%2F"
    with pytest.raises(BrokerUnreachable, match=r"^cannot connect to the broker at "
                       rf"amqp://guest@127\.0\.0\.1:{refusing_ports[0]}/%2F: connection refused$"):
        connection.connect(url, name="test")


def test_a_node_that_never_completes_the_handshake_is_unreachable_not_a_crash() -> None:
    """It accepts the TCP connection and says nothing (a wedged broker): pika 1.2 raises
    AMQPConnectorStackTimeout, which is no AMQPError."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]

    def short(params: object) -> None:
        params.stack_timeout = 0.5  # type: ignore[attr-defined]

    try:
        with pytest.raises(BrokerUnreachable, match=rf"127\.0\.0\.1:{port}/%2F: no AMQP handshake in time "):
            connection.connect(f"amqp://guest:guest@127.0.0.1:{port}/%2F", name="test",
                               tune=short)  # type: ignore[arg-type]
    finally:
        silent.close()


@pytest.mark.parametrize("written, urls", [
    ("", (connection.DEFAULT_BROKER,)),
    ("amqp://u:p@a/", ("amqp://u:p@a/",)),
    ("amqp://u:p@a/ amqp://u:p@b/", ("amqp://u:p@a/", "amqp://u:p@b/")),
    (" amqp://u:p@a/,amqps://u:p@b/ ,  amqp://c/ ", ("amqp://u:p@a/", "amqps://u:p@b/", "amqp://c/")),
    ("amqp://u:p,w@a/", ("amqp://u:p,w@a/",)),  # a comma in a password is not a separator
])
def test_the_environment_may_name_several_nodes(monkeypatch: pytest.MonkeyPatch, written: str,
                                                urls: tuple[str, ...]) -> None:
    monkeypatch.setenv(connection.BROKER_ENV, written)
    assert connection.default_broker() == urls
    assert connection.as_urls(None) == urls
    assert connection.as_urls([]) == urls


def test_a_node_that_never_finishes_the_handshake_is_unreachable_not_an_escape() -> None:
    """pika reports a handshake past stack_timeout as AMQPConnectorStackTimeout, which is
    neither an AMQPError nor an OSError: it killed the leader reading queue depths."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (in the kernel), never answers the AMQP handshake

        def short(params: object) -> None:
            params.stack_timeout = 0.3  # type: ignore[attr-defined]
            params.socket_timeout = 0.3  # type: ignore[attr-defined]
            params.connection_attempts = 1  # type: ignore[attr-defined]

        url = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(BrokerUnreachable):
            BrokerNodes([url]).connect(name="test", tune=short)
