"""What the master knows about each leader, worker and slot: plain records, no behaviour
beyond small derived values. The decisions live in `program.py`."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from qsupervisor.master.loop import Timer
from qsupervisor.master.outbox import Outbox
from qsupervisor.states import WorkerState
from qsupervisor.stats_segment import Snapshot, Stats


@dataclass(eq=False)
class LeaderProc:
    pid: int
    sock: socket.socket
    started: float  # wall clock, for status's uptime
    outbox: Outbox  # every message to the leader goes through it: the master never blocks
    ready: bool = False
    files: dict[str, float] = field(default_factory=dict)  # preloaded file -> mtime
    version: str | None = None  # the qsupervisor it runs, as its "ready" said


@dataclass(eq=False)
class WorkerProc:
    wid: int  # master-assigned, matches the leader's "spawned" reply to the request
    slot: int
    # The leader that forked it (None: an exited worker handed over through a re-exec
    # after its leader had gone; only compared with live leaders).
    leader: LeaderProc | None
    max_jobs: int
    spawned: float  # wall clock, for status's uptime
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    channel: socket.socket | None = None
    stats: Stats | None = None  # its live segment; closed when it exits
    final: Snapshot | None = None  # the segment's last reading, once it has exited
    ready_at: float | None = None  # monotonic
    stop_reason: str | None = None  # why the master asked it to stop
    exit_reason: str | None = None  # what the worker said on its way out
    exit_error: str | None = None
    last_exit: str | None = None  # the summary status shows
    killed: str | None = None  # why the master SIGKILLed it: stop_timeout | timeout | redelivered
    exit_settled: bool = False  # it settled its message itself before leaving (timeout)
    kill_timer: Timer | None = None
    broker_error: str | None = None
    node: str | None = None  # the broker node it consumes from (display URL), if connected
    version: str | None = None  # the qsupervisor it runs, as its "ready" said
    rss: int | None = None  # cached for status: see master/status.py
    rss_read_at: float = float("-inf")

    @property
    def alive(self) -> bool:
        return self.state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING)

    @property
    def consuming(self) -> bool:
        """Its consumer is attached, as far as the worker has told us: RUNNING and not
        reconnecting to the broker."""
        return self.state is WorkerState.RUNNING and self.broker_error is None

    def ran_for(self, now: float) -> float:
        """Seconds RUNNING, by the master's monotonic clock."""
        return now - self.ready_at if self.ready_at is not None else 0.0


@dataclass(eq=False)
class Slot:
    index: int
    worker: WorkerProc | None = None
    # The worker this slot's current one replaces during a reload: it keeps consuming
    # until its successor is RUNNING, so the program never has fewer consumers.
    predecessor: WorkerProc | None = None
    failures: int = 0  # consecutive unexpected exits, for the backoff delay
    start_failures: int = 0  # consecutive exits before RUNNING, for FATAL
    restarts: int = 0
    last_exit: str | None = None
    backoff_timer: Timer | None = None
