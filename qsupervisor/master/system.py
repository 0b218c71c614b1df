"""The operating system as the master uses it: a clock, and processes to start, signal and
reap. Everything in `master/` reaches time and processes through these two, so the unit
tests can run the real pool, programs and commands with a manual clock and fake leaders
(tests/unit/fakes.py) while the daemon runs them on the real thing.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Protocol

from qsupervisor import procutil
from qsupervisor.config import DaemonConfig, ProgramConfig

# Forks a leader for a program and returns its pid; the child never returns. It lives in
# the leader tier (leader/forkserver.py) and reaches the master from the launcher, so the
# master's modules never import the leader's code (nor pika, which the leader needs).
StartLeader = Callable[[ProgramConfig, DaemonConfig, str, socket.socket, int], int]
# Forks the herald (herald/main.py) and returns its pid; the same arrangement.
StartHerald = Callable[[DaemonConfig, str, socket.socket], int]


class Clock(Protocol):
    def monotonic(self) -> float: ...  # for timers and durations
    def time(self) -> float: ...  # wall clock: uptimes, and job starts the workers record


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


class Processes(Protocol):
    def start_leader(self, program: ProgramConfig, daemon: DaemonConfig, log_format: str,
                     sock: socket.socket, output_fd: int) -> int: ...

    def start_herald(self, daemon: DaemonConfig, log_format: str,
                     sock: socket.socket) -> int: ...

    def signal(self, pid: int, sig: int) -> None: ...

    def reap(self) -> tuple[int, int] | None:
        """One exited child as (pid, waitpid status), or None when none is waiting."""


class SystemProcesses:
    def __init__(self, start_leader: StartLeader, start_herald: StartHerald | None = None) -> None:
        self._start_leader = start_leader
        self._start_herald = start_herald

    def start_leader(self, program: ProgramConfig, daemon: DaemonConfig, log_format: str,
                     sock: socket.socket, output_fd: int) -> int:
        return self._start_leader(program, daemon, log_format, sock, output_fd)

    def start_herald(self, daemon: DaemonConfig, log_format: str, sock: socket.socket) -> int:
        if self._start_herald is None:
            raise OSError("no herald in this process tree")
        return self._start_herald(daemon, log_format, sock)

    def signal(self, pid: int, sig: int) -> None:
        procutil.signal_pid(pid, sig)

    def reap(self) -> tuple[int, int] | None:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        return (pid, status) if pid else None
