"""Messages between the master, the leaders and the workers.

Each pair talks over an AF_UNIX SOCK_SEQPACKET socketpair: the kernel keeps message
boundaries, so a message is one JSON object with no framing of our own, and file
descriptors (a new worker's channel and its stats segment) travel with the message that
asks for them, atomically.
"""

from __future__ import annotations

import json
import math
import os
import select
import socket
from collections.abc import Sequence
from typing import Any

from qsupervisor.channel import Ev

Message = dict[str, Any]

# Leader/worker messages are small (a traceback at most); a generous cap still bounds memory.
MAX_MESSAGE = 256 * 1024
MAX_FDS = 4


def socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def readable(sock: socket.socket | int, timeout: float = 0.0) -> bool:
    """Whether a message (or end of file) waits on the socket (or descriptor), waiting up
    to `timeout` seconds for one. poll, not select: select() refuses descriptors from 1024
    up, which a master with many workers (a channel each) reaches, and so can a leader
    whose preloaded code opens many files."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))


def encode(msg: Message) -> bytes:
    """A message as it goes on the wire (its size is what MAX_MESSAGE bounds)."""
    return json.dumps(msg, separators=(",", ":")).encode()


def send(sock: socket.socket, msg: Message, fds: Sequence[int] = ()) -> None:
    data = encode(msg)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv_message(sock: socket.socket) -> Message | None:
    """A message that carries no fds (the master's side); None at end of file or when the
    socket failed; BlockingIOError when a non-blocking socket has nothing after all. Stray
    fds are closed rather than leaked."""
    try:
        msg, fds = recv(sock)
    except BlockingIOError:
        raise  # nothing to read after all (a non-blocking socket): not the end
    except ConnectionResetError:
        # The peer closed with our messages unread in its queue (a killed leader). The
        # kernel reports that once, before what the peer sent: its last words, its last
        # workers' exits among them, are still to be read.
        return recv_message(sock)
    except OSError:
        return None
    for fd in fds:
        os.close(fd)
    return msg


def recv(sock: socket.socket) -> tuple[Message | None, list[int]]:
    """Return (message, fds); (None, []) at end of file or on a malformed message."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        return None, list(fds)
    try:
        msg = json.loads(data)
    except ValueError:
        return {"ev": Ev.GARBAGE}, list(fds)
    return (msg if isinstance(msg, dict) else {"ev": Ev.GARBAGE}), list(fds)
