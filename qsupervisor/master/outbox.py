"""Sending to a leader without ever blocking the master.

The master's channel to a leader is non-blocking. A message the socket cannot take now
waits in the outbox (its descriptors duplicated, so the caller may close its own) and goes
out when the socket is writable again, in order. A leader that stops reading while
OUTBOX_LIMIT messages wait is wedged: the owner is told (it kills the leader) rather than
the master waiting on it, which used to hold the whole daemon for 5 s per message.
"""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Sequence
from typing import Callable

from qsupervisor import ipc
from qsupervisor.master.loop import EventLoop

OUTBOX_LIMIT = 1000  # messages; a leader reads them as fast as it can fork or answer


class Outbox:
    def __init__(self, sock: socket.socket, loop: EventLoop,
                 on_overflow: Callable[[], object]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = loop
        self._on_overflow = on_overflow
        self._waiting: collections.deque[tuple[ipc.Message, list[int]]] = collections.deque()
        self._overflowed = False

    def __len__(self) -> int:
        return len(self._waiting)

    def send(self, msg: ipc.Message, fds: Sequence[int] = ()) -> None:
        """Send now, or as soon as the peer reads; raises OSError if the peer is gone."""
        if not self._waiting:
            try:
                ipc.send(self._sock, msg, fds)
                return
            except BlockingIOError:
                self._loop.add_writer(self._sock, self._flush)
        if len(self._waiting) >= OUTBOX_LIMIT:
            if not self._overflowed:
                self._overflowed = True
                self._on_overflow()
            return
        self._waiting.append((msg, [os.dup(fd) for fd in fds]))

    def _flush(self) -> None:
        while self._waiting:
            msg, fds = self._waiting[0]
            try:
                ipc.send(self._sock, msg, fds)
            except BlockingIOError:
                return
            except OSError:
                self.close()  # the peer is gone; its exit is handled where it is reaped
                return
            self._waiting.popleft()
            for fd in fds:
                os.close(fd)
        self._loop.remove_writer(self._sock)

    def close(self) -> None:
        """Drop what waits (the leader is gone or going)."""
        if self._waiting:
            self._loop.remove_writer(self._sock)
        while self._waiting:
            for fd in self._waiting.popleft()[1]:
                os.close(fd)
