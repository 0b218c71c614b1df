"""The Prometheus endpoint's HTTP server (master/metrics_server.py) on a real EventLoop and
real TCP sockets: replies, and the bounds that keep a client from costing the master
memory or a wait (oversized requests, slow clients, clients that do not read, too many
connections)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from qsupervisor.master import metrics_server
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.metrics_server import MAX_CONNECTIONS, MAX_REQUEST, MetricsServer

BODY = b"# HELP x h\n# TYPE x gauge\nx 1\n"
GET = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"


class Endpoint:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.loop = EventLoop()
        self.body = BODY
        self.server = MetricsServer(host, 0)
        self.server.start(self.loop, self.scrape)
        self.port = self.server.address[1]
        self.host = host

    def scrape(self) -> bytes:
        return self.body

    def connect(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect((self.host, self.port))
        client.setblocking(False)
        return client

    def pump(self, seconds: float = 0.05) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.loop.run_once(max_wait=0.005)

    def read_all(self, client: socket.socket, timeout: float = 5.0) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.loop.run_once(max_wait=0.005)
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk
        raise AssertionError(f"the server did not close the connection; got {data[:200]!r}")

    def exchange(self, request: bytes) -> bytes:
        client = self.connect()
        client.sendall(request)
        try:
            return self.read_all(client)
        finally:
            client.close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    found = Endpoint()
    yield found
    found.server.close()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_get_metrics(endpoint: Endpoint) -> None:
    reply = endpoint.exchange(GET)
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert f"Content-Length: {len(BODY)}".encode() in head and b"Connection: close" in head
    assert body == BODY
    assert status_of(endpoint.exchange(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n")) == 200
    assert status_of(endpoint.exchange(b"GET /metrics HTTP/1.1\n\n")) == 200  # bare LFs


def test_head_has_no_body(endpoint: Endpoint) -> None:
    reply = endpoint.exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status_of(reply) == 200 and reply.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("request_line", "status"), [
    (b"GET / HTTP/1.1", 404),
    (b"GET /metricsx HTTP/1.1", 404),
    (b"GET /metrics/ HTTP/1.1", 404),
    (b"POST /metrics HTTP/1.1", 405),
    (b"DELETE /metrics HTTP/1.1", 405),
    (b"GET /metrics", 400),
    (b"GET /metrics SPDY/3", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello, then a blank line
])
def test_bad_paths_methods_and_requests(endpoint: Endpoint, request_line: bytes,
                                        status: int) -> None:
    reply = endpoint.exchange(request_line + b"\r\n\r\n")
    assert status_of(reply) == status
    if status == 405:
        assert b"Allow: GET, HEAD\r\n" in reply


def test_an_oversized_request_is_refused_and_closed(endpoint: Endpoint) -> None:
    client = endpoint.connect()
    client.sendall(b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * (MAX_REQUEST + 100))
    reply = endpoint.read_all(client)
    client.close()
    assert status_of(reply) == 413
    assert not endpoint.server.clients


def test_a_slow_client_is_dropped_at_the_deadline(
        endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_server, "DEADLINE", 0.3)
    client = endpoint.connect()
    client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    endpoint.pump(0.1)
    assert len(endpoint.server.clients) == 1
    started = time.monotonic()
    assert endpoint.read_all(client) == b""  # closed without a reply
    assert time.monotonic() - started < 1.0
    assert not endpoint.server.clients
    client.close()
    assert status_of(endpoint.exchange(GET)) == 200  # and the server goes on


def test_a_client_that_does_not_read_its_reply_is_dropped_at_the_deadline(
        endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_server, "DEADLINE", 0.3)
    endpoint.body = b"x 1\n" * 4_000_000  # 16 MB: more than the socket buffers hold
    client = endpoint.connect()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(GET)
    endpoint.pump(0.1)
    assert len(endpoint.server.clients) == 1  # reply in its buffer, waiting to be written
    endpoint.pump(0.4)
    assert not endpoint.server.clients
    client.close()


def test_connections_past_the_limit_get_503(endpoint: Endpoint) -> None:
    held = [endpoint.connect() for _ in range(MAX_CONNECTIONS)]
    for client in held:
        client.sendall(b"GET /metrics HTTP/1.1\r\n")  # incomplete: each stays open
    endpoint.pump(0.1)
    assert len(endpoint.server.clients) == MAX_CONNECTIONS
    reply = endpoint.exchange(GET)
    assert status_of(reply) == 503 and b"Retry-After: 1" in reply
    for client in held:
        client.close()
    endpoint.pump(0.1)
    assert not endpoint.server.clients
    assert status_of(endpoint.exchange(GET)) == 200


def test_a_client_gone_mid_request_is_forgotten(endpoint: Endpoint) -> None:
    client = endpoint.connect()
    client.sendall(b"GET /met")
    endpoint.pump(0.05)
    client.close()
    endpoint.pump(0.05)
    assert not endpoint.server.clients


def test_a_failing_scrape_answers_500_and_the_server_goes_on(endpoint: Endpoint) -> None:
    def broken() -> bytes:
        raise RuntimeError("a bug in a family")

    endpoint.server.scrape = broken
    assert status_of(endpoint.exchange(GET)) == 500
    endpoint.server.scrape = endpoint.scrape
    assert status_of(endpoint.exchange(GET)) == 200


def test_ipv6_loopback() -> None:
    try:
        endpoint = Endpoint("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert endpoint.server.loopback
        assert status_of(endpoint.exchange(GET)) == 200
    finally:
        endpoint.server.close()


def test_a_port_in_use_fails_at_once(endpoint: Endpoint) -> None:
    with pytest.raises(OSError):
        MetricsServer("127.0.0.1", endpoint.port)
