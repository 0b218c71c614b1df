"""What the master knows about each leader, worker and slot: plain records, no behaviour
beyond small derived values. The decisions live in `program.py`."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Dict, Optional

from qsupervisor.master.loop import Timer
from qsupervisor.states import WorkerState
from qsupervisor.stats_segment import Stats


@dataclass(eq=False)
class LeaderProc:
    pid: int
    sock: socket.socket
    started: float  # wall clock, for status's uptime
    ready: bool = False
    files: Dict[str, float] = field(default_factory=dict)  # preloaded file -> mtime


@dataclass(eq=False)
class WorkerProc:
    wid: int  # master-assigned, matches the leader's "spawned" reply to the request
    slot: int
    leader: LeaderProc
    max_jobs: int
    spawned: float  # wall clock, for status's uptime
    state: WorkerState = WorkerState.STARTING
    pid: Optional[int] = None
    channel: Optional[socket.socket] = None
    stats: Optional[Stats] = None
    ready_at: Optional[float] = None  # monotonic
    stop_reason: Optional[str] = None  # why the master asked it to stop
    exit_reason: Optional[str] = None  # what the worker said on its way out
    exit_error: Optional[str] = None
    last_exit: Optional[str] = None  # the summary status shows
    killed: Optional[str] = None  # why the master SIGKILLed it: stop_timeout | timeout
    exit_settled: bool = False  # it settled its message itself before leaving (timeout)
    kill_timer: Optional[Timer] = None
    broker_error: Optional[str] = None
    rss: Optional[int] = None  # cached for status: see master/status.py
    rss_read_at: float = float("-inf")

    @property
    def alive(self) -> bool:
        return self.state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING)

    def ran_for(self, now: float) -> float:
        """Seconds RUNNING, by the master's monotonic clock."""
        return now - self.ready_at if self.ready_at is not None else 0.0


@dataclass(eq=False)
class Slot:
    index: int
    worker: Optional[WorkerProc] = None
    # The worker this slot's current one replaces during a reload: it keeps consuming
    # until its successor is RUNNING, so the program never has fewer consumers.
    predecessor: Optional[WorkerProc] = None
    failures: int = 0  # consecutive unexpected exits, for the backoff delay
    start_failures: int = 0  # consecutive exits before RUNNING, for FATAL
    restarts: int = 0
    last_exit: Optional[str] = None
    backoff_timer: Optional[Timer] = None
