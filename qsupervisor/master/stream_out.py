"""Writing a reply to a stream client without ever blocking the master: what the control
socket's and the metrics endpoint's connections share. Each keeps its own buffer and
decides what to do once it is empty (stop watching, close, read again)."""

from __future__ import annotations

import socket


def send_pending(sock: socket.socket, pending: bytearray) -> bool:
    """Send what the non-blocking socket takes now from the front of `pending`, removing
    it. False when the peer is gone (the caller closes the connection); True otherwise,
    whether or not anything could be sent."""
    try:
        sent = sock.send(pending)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    del pending[:sent]
    return True
