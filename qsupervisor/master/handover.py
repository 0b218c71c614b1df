"""The master's records as a re-exec hands them over: plain JSON-able values.

A re-exec (reexec.py) replaces the master's code in place; the leaders and workers run on
untouched, so the new image must know them exactly as the old one did. Each record is
written here as a dict whose descriptors are numbers (they survive the exec, marked
inheritable), whose timers are monotonic deadlines (CLOCK_MONOTONIC is the system's), and
whose references to other records are indexes into the lists that hold them. The owners
of private state (pool, program, autoscaler, totals, herald) export and load it
themselves, through `export_state` and `load_state`.

FORMAT is the version of this layout. A master hands over only to code that reads its
FORMAT; the pre-flight check (reexec.py) finds out before anything is replaced.
"""

from __future__ import annotations

import socket
from typing import Any

from qsupervisor.master.loop import deadline
from qsupervisor.master.process import LeaderProc, Slot, WorkerProc
from qsupervisor.states import WorkerState
from qsupervisor.stats_segment import Snapshot, Stats

FORMAT = 1
State = dict[str, Any]


class HandoverError(Exception):
    """The state cannot be handed over (or taken): the re-exec is refused, nothing changed."""


def adopt_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)  # the next fork must not leak it into a leader
    return sock


def leader_state(proc: LeaderProc) -> State:
    return {"pid": proc.pid, "sock": proc.sock.fileno(), "started": proc.started,
            "ready": proc.ready, "files": sorted(proc.files.items()), "version": proc.version}


def worker_state(worker: WorkerProc, leaders: list[LeaderProc]) -> State:
    stats_fd = worker.stats.fd if worker.stats is not None else None
    return {
        "wid": worker.wid, "slot": worker.slot, "max_jobs": worker.max_jobs,
        "leader": leaders.index(worker.leader) if worker.leader in leaders else None,
        "spawned": worker.spawned, "state": worker.state.value, "pid": worker.pid,
        "channel": worker.channel.fileno() if worker.channel is not None else None,
        "stats": stats_fd,
        # An exited worker's last reading (status shows it while the slot keeps its record).
        "final": list(worker.final) if worker.final is not None else None,
        "ready_at": worker.ready_at, "stop_reason": worker.stop_reason,
        "exit_reason": worker.exit_reason, "exit_error": worker.exit_error,
        "last_exit": worker.last_exit, "killed": worker.killed,
        "exit_settled": worker.exit_settled, "kill_at": deadline(worker.kill_timer),
        "broker_error": worker.broker_error, "node": worker.node, "version": worker.version,
    }


def worker_from(data: State, leaders: list[LeaderProc]) -> WorkerProc:
    """The record; its channel and segment adopted. Timers are the pool's to re-arm."""
    leader = data["leader"]
    worker = WorkerProc(
        wid=int(data["wid"]), slot=int(data["slot"]),
        leader=leaders[leader] if leader is not None else None,
        max_jobs=int(data["max_jobs"]), spawned=float(data["spawned"]),
        state=WorkerState(data["state"]), pid=data["pid"], ready_at=data["ready_at"],
        stop_reason=data["stop_reason"], exit_reason=data["exit_reason"],
        exit_error=data["exit_error"], last_exit=data["last_exit"], killed=data["killed"],
        exit_settled=bool(data["exit_settled"]), broker_error=data["broker_error"],
        node=data["node"], version=data["version"])
    if data["channel"] is not None:
        worker.channel = adopt_socket(int(data["channel"]))
        worker.channel.setblocking(False)
    if data["stats"] is not None:
        worker.stats = Stats(int(data["stats"]), keep_fd=True)
    if data["final"] is not None:
        worker.final = Snapshot(*data["final"])
    return worker


def slot_state(slot: Slot, workers: list[WorkerProc]) -> State:
    def ref(worker: WorkerProc | None) -> int | None:
        return workers.index(worker) if worker is not None else None

    return {"index": slot.index, "worker": ref(slot.worker),
            "predecessor": ref(slot.predecessor), "failures": slot.failures,
            "start_failures": slot.start_failures, "restarts": slot.restarts,
            "last_exit": slot.last_exit, "backoff_at": deadline(slot.backoff_timer)}


def slot_from(data: State, workers: list[WorkerProc]) -> Slot:
    def ref(index: int | None) -> WorkerProc | None:
        return workers[index] if index is not None else None

    return Slot(index=int(data["index"]), worker=ref(data["worker"]),
                predecessor=ref(data["predecessor"]), failures=int(data["failures"]),
                start_failures=int(data["start_failures"]), restarts=int(data["restarts"]),
                last_exit=data["last_exit"])


def descriptors(state: Any) -> list[int]:
    """Every descriptor a state names (the values of the keys that hold one), for marking
    them inheritable before the exec."""
    found: list[int] = []
    if isinstance(state, dict):
        for key, value in state.items():
            if key in FD_KEYS and isinstance(value, int):
                found.append(value)
            elif key in FD_LIST_KEYS and isinstance(value, list):
                found.extend(v for v in value if isinstance(v, int))
            else:
                found.extend(descriptors(value))
    elif isinstance(state, list):
        for item in state:
            found.extend(descriptors(item))
    return found


# The keys whose value is a descriptor, or a list of them, wherever they appear.
FD_KEYS = frozenset({"sock", "channel", "stats", "control_fd", "metrics_fd", "requester_fd"})
# ("sock" also names each idle client connection of "clients".)
FD_LIST_KEYS = frozenset({"output_fds"})
