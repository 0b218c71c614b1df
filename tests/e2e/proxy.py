"""A TCP proxy in front of the test broker: a second "node" a test can take away.

Closing it drops every connection through it at once, as a RabbitMQ node that stops
does; a proxy made on a port that was only bound until then stands for a node that
comes up later. It forwards bytes and knows nothing of AMQP.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

from .harness import BROKER_URL


def reserve_port() -> socket.socket:
    """A bound socket that does not listen yet: connections to its port are refused."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_via(port: int) -> str:
    """BROKER_URL with its host and port replaced by the proxy's."""
    parts = urlsplit(BROKER_URL)
    login = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{login}@127.0.0.1:{port}").geturl()


class Proxy:
    def __init__(self, listener: socket.socket | None = None) -> None:
        self.listener = listener or reserve_port()
        self.port = self.listener.getsockname()[1]
        parts = urlsplit(BROKER_URL)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False

    def start(self) -> Proxy:
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        """Refuse new connections and cut every open one."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        for sock in [self.listener, *sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
