"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

_address: str | None = None


def take_notify_socket() -> None:
    """Remember $NOTIFY_SOCKET and remove it from the environment, so that no leader or
    worker (which inherit the environment) can ever speak for the daemon."""
    global _address
    _address = os.environ.pop("NOTIFY_SOCKET", None)


def notify_socket() -> str | None:
    """The address taken, for a re-exec to hand over (the environment no longer has it)."""
    return _address


def use_notify_socket(address: str | None) -> None:
    global _address
    _address = address


def notify(state: str) -> bool:
    if not _address:
        return False
    address = "\0" + _address[1:] if _address.startswith("@") else _address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False
