"""What a program and its pool need from the master, and a pool from its program, as
Protocols: neither sees the class on the other side, and a unit test can host them in a
small fake (tests/unit/fakes.py)."""

from __future__ import annotations

from typing import Protocol

from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.process import LeaderProc
from qsupervisor.master.system import Processes


class ChildOwner(Protocol):
    """Whoever is told when one of the master's children exits."""

    def child_exited(self, pid: int, status: int) -> None: ...


class Host(Protocol):
    loop: EventLoop  # its clock is the master's clock
    processes: Processes
    daemon: DaemonConfig
    log_format: str

    def track_pid(self, pid: int, owner: ChildOwner) -> None: ...
    def forget_pid(self, pid: int) -> None: ...
    def changed(self) -> None: ...
    def output_fd(self, program: str) -> int: ...


class PoolOwner(Protocol):
    """What a pool needs from its program."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> ProgramConfig: ...
    @property
    def running(self) -> bool: ...  # the program is RUNNING: a slot that empties is refilled

    def spawning_leader(self) -> LeaderProc | None:
        """The leader new workers are forked from; None while the program does not run
        (its leader's "ready", or the next start, fills the pool again)."""

    def workers_changed(self) -> None: ...
    def child_exited(self, pid: int, status: int) -> None: ...  # adopted orphans' exits
