"""The Prometheus endpoint: a minimal HTTP/1.x server inside the master's loop.

No threads and no http.server: the master has one loop and never blocks, so this is the
control server's pattern over TCP. Each connection may send one request of at most
MAX_REQUEST bytes within DEADLINE seconds (a client that trickles its headers, or never
reads its reply, is dropped when the deadline passes), at most MAX_CONNECTIONS are open
at once (more are answered 503 and closed), and every reply closes its connection.
Prometheus scrapes once per interval, so nothing more is needed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Callable

from qsupervisor import logs
from qsupervisor.master.exposition import CONTENT_TYPE
from qsupervisor.master.loop import EventLoop, Timer
from qsupervisor.master.stream_out import send_pending

log = logs.get("qsupervisor.metrics")

MAX_REQUEST = 8192  # bytes: a request line and headers; Prometheus sends about 300
MAX_CONNECTIONS = 16
DEADLINE = 10.0  # seconds from accept to the last byte of the reply
ACCEPT_PAUSE = 0.1  # seconds between accept attempts while out of descriptors
PATH = "/metrics"

Scrape = Callable[[], bytes]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             extra: str = "", head: bool = False) -> bytes:
    header = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return header.encode("ascii") + (b"" if head else body)


def answer(request: bytes, scrape: Scrape) -> bytes:
    """The reply to one request (its line and headers, up to the blank line)."""
    line = request.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return response(400, b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != PATH.encode():
        return response(404, f"not found; the metrics are at {PATH}\n".encode())
    if method not in (b"GET", b"HEAD"):
        return response(405, b"method not allowed\n", extra="Allow: GET, HEAD\r\n")
    try:
        body = scrape()
    except Exception:  # a bug in one family must not take the master down
        log.exception("metrics scrape failed")
        return response(500, b"internal error; see the daemon's log\n")
    return response(200, body, CONTENT_TYPE, head=method == b"HEAD")


class _Client:
    def __init__(self, server: MetricsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.rbuf = b""
        self.wbuf = bytearray()
        self.closed = False
        loop = server.loop
        self.deadline: Timer = loop.call_later(DEADLINE, self.close)
        loop.add_reader(sock, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(MAX_REQUEST + 1 - len(self.rbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # gone before its request was complete
            self.close()
            return
        self.rbuf += data
        end = self.rbuf.find(b"\r\n\r\n")
        end = end if end != -1 else self.rbuf.find(b"\n\n")
        if end != -1:
            self.reply(answer(self.rbuf[:end], self.server.scrape))
        elif len(self.rbuf) > MAX_REQUEST:
            self.reply(response(413, f"request longer than {MAX_REQUEST} bytes\n".encode()))

    def reply(self, data: bytes) -> None:
        """Send `data`, then close; anything more the client sends is not read."""
        self.server.loop.remove_reader(self.sock)
        self.wbuf += data
        self.server.loop.add_writer(self.sock, self._on_writable)

    def _on_writable(self) -> None:
        if not send_pending(self.sock, self.wbuf) or not self.wbuf:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.deadline.cancel()
        self.server.loop.remove_reader(self.sock)
        self.server.loop.remove_writer(self.sock)
        self.sock.close()
        self.server.clients.discard(self)


class MetricsServer:
    """Binds at once (qsupervisord binds before it detaches, so that a port in use is an
    error its caller sees); serves once `start` registers it with the loop."""

    def __init__(self, host: str, port: int, listening: socket.socket | None = None) -> None:
        """`listening`: the socket a re-exec handed over, already bound and listening."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if listening is not None:
            self.sock = listening
        else:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                self.sock.bind((host, port))
                self.sock.listen(64)
            except OSError:
                self.sock.close()
                raise
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.clients: set[_Client] = set()
        self.loopback = ipaddress.ip_address(self.address[0]).is_loopback

    def start(self, loop: EventLoop, scrape: Scrape) -> None:
        self.loop = loop
        self.scrape = scrape
        loop.add_reader(self.sock, self._on_accept)
        where = (f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]) \
            + f":{self.address[1]}"
        if self.loopback:
            log.info("metrics endpoint listening", url=f"http://{where}{PATH}")
        else:
            log.warning("metrics endpoint listening beyond loopback, without authentication: "
                        "firewall it or put a proxy with TLS and authentication in front "
                        "(docs/operations.md)", url=f"http://{where}{PATH}")

    def _on_accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The connection stays in the backlog and the listener readable:
                    # accepting again at once would spin the loop.
                    self.loop.remove_reader(self.sock)
                    self.loop.call_later(ACCEPT_PAUSE, self._resume)
                return
            sock.setblocking(False)
            if len(self.clients) >= MAX_CONNECTIONS:
                try:  # small enough for a fresh socket's buffer: never waits
                    sock.send(response(503, b"too many connections\n",
                                       extra="Retry-After: 1\r\n"))
                except OSError:
                    pass
                sock.close()
                continue
            self.clients.add(_Client(self, sock))

    def _resume(self) -> None:
        if self.sock.fileno() != -1:
            self.loop.add_reader(self.sock, self._on_accept)

    def close(self) -> None:
        if self.sock.fileno() != -1 and hasattr(self, "loop"):
            self.loop.remove_reader(self.sock)
        for client in list(self.clients):
            client.close()
        self.sock.close()
