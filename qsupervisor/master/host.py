"""What a program and its pool need from the master, as a Protocol: they never see the
Master class, and a unit test can host them in a small fake (tests/unit/fakes.py)."""

from __future__ import annotations

from typing import Protocol

from qsupervisor.config import DaemonConfig
from qsupervisor.master.loop import EventLoop
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
