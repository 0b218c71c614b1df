"""The picture `qsupervisorctl status` shows, built from the master's records on demand."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from qsupervisor import __version__, procutil
from qsupervisor.master.process import LeaderProc, WorkerProc
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.system import Clock
from qsupervisor.stats_segment import Snapshot

RSS_MAX_AGE = 1.0  # seconds


def master_status(started: float, now: float, config_path: str,
                  herald_pid: int | None = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "uptime": round(now - started, 3),
            "config": config_path, "version": __version__, "herald_pid": herald_pid}


def program_status(program: ProgramRuntime, clock: Clock, search_path: Sequence[str] = (),
                   with_workers: bool = True) -> dict[str, Any]:
    """The program's status; `with_workers=False` leaves out the entry per worker (a
    large program's summary costs a fraction of the request and the reply)."""
    leader = program.leader
    now = clock.time()
    summary = _Summary(now, clock.monotonic())
    workers = _read_workers(program, summary, with_workers)
    degraded = program.degraded()
    status = {
        # DEGRADED is RUNNING with fewer consumers than workers for a while: not a state
        # of the program's state machine, the health status and scripts want to see.
        "state": "DEGRADED" if degraded else program.state.value,
        "queue": program.config.queue,
        "leader_pid": leader.pid if leader else None,
        "leader_uptime": round(now - leader.started, 3) if leader else None,
        "leader_version": leader.version if leader else None,
        "desired": program.desired,
        "autoscale": program.autoscaler.view(),  # None for a fixed count
        "running": program.serving(),
        "consuming": program.consuming(),
        "degraded": degraded,
        "error": program.error,
        "preload": preload_status(program.name, leader, search_path),
        "last_minute": last_minute(summary.snapshots, program.recent_exits()),
        "queue_stats": None,  # filled from the leader's answer, if it comes in time
        "summary": summary.view(),
        "workers": workers,
    }
    add_slot_details(status, program)
    return status


def workers_summary(program: ProgramRuntime, clock: Clock) -> _Summary:
    """The totals over the program's workers alone (the fleet announcement's figures)."""
    summary = _Summary(clock.time(), clock.monotonic())
    _read_workers(program, summary, with_workers=False)
    return summary


def _read_workers(program: ProgramRuntime, summary: _Summary,
                  with_workers: bool) -> list[dict[str, Any]]:
    """Read every worker's stats segment once, into the summary and (`with_workers`) an
    entry per worker."""
    workers = []
    # Identities, computed once: asking every slot about every worker is quadratic
    # (65,536 comparisons per status at 256 workers).
    predecessors = program.superseded()
    draining = {id(w) for w in program.draining()}
    for worker in program.workers():
        alive = worker.alive  # once per worker: the property is a measurable share at 256
        snapshot = worker.stats.read() if worker.stats is not None else worker.final
        summary.add(worker, snapshot, alive)
        if not with_workers:
            continue
        entry = worker_status(worker, id(worker) in draining, snapshot, alive, summary.now,
                              summary.monotonic)
        # Old code still consuming until its successor is RUNNING (a rolling reload).
        entry["superseded"] = id(worker) in predecessors
        workers.append(entry)
    return workers


class _Summary:
    """Totals over a program's workers, for `status` with or without worker entries."""

    def __init__(self, now: float, monotonic: float) -> None:
        self.now = now
        self.monotonic = monotonic
        self.snapshots: list[Snapshot] = []  # the live workers', for the last-minute figures
        self.states: dict[str, int] = {}
        self.busy = self.held = self.rss = 0

    def add(self, worker: WorkerProc, snapshot: Snapshot | None, alive: bool) -> None:
        state = worker.state.value
        self.states[state] = self.states.get(state, 0) + 1
        if snapshot is not None and alive:
            self.snapshots.append(snapshot)
            self.busy += snapshot.job_started is not None
            self.held += snapshot.held
        self.rss += worker_rss(worker, alive, self.monotonic) or 0

    def view(self) -> dict[str, Any]:
        return {"states": self.states, "busy": self.busy, "held": self.held, "rss": self.rss}


def last_minute(live: list[Snapshot], exited: list[tuple[int, int, int]]) -> dict[str, int]:
    """Jobs done, failed and retried in the last minute, by live and recently exited
    workers alike (a recycle must not make the figures drop)."""
    rows = [(s.done_last_minute, s.failed_last_minute, s.retried_last_minute) for s in live]
    rows += exited
    return {"done": sum(r[0] for r in rows), "failed": sum(r[1] for r in rows),
            "retried": sum(r[2] for r in rows)}


def queue_view(answer: dict[str, Any], held: int) -> dict[str, Any]:
    """The leader's reading of the broker, plus what our workers hold unacked (the broker's
    own unacked count needs the management plugin, which a stock broker lacks)."""
    if answer.get("error"):
        return {"error": answer["error"]}
    return {"ready": answer.get("ready"), "consumers": answer.get("consumers"),
            "unacked": held,
            "dead_letter_ready": answer.get("dead_letter_ready")}


def worker_rss(worker: WorkerProc, alive: bool, now: float) -> int | None:
    """RSS, read from /proc at most once a second per worker: at hundreds of workers the
    reads dominate a status request, and nobody needs it fresher."""
    if worker.pid is None or not alive:
        return None
    if now - worker.rss_read_at >= RSS_MAX_AGE:
        worker.rss, worker.rss_read_at = procutil.read_rss(worker.pid), now
    return worker.rss


def worker_status(worker: WorkerProc, draining: bool, snapshot: Snapshot | None,
                  alive: bool, now: float, monotonic: float) -> dict[str, Any]:
    job: dict[str, Any] | None = None
    if snapshot is not None and snapshot.job_started is not None and alive:
        job = {"id": snapshot.job_id,
               "running_for": round(max(0.0, now - snapshot.job_started), 3)}
    return {
        "slot": worker.slot,
        "pid": worker.pid,
        "state": worker.state.value,
        "uptime": round(now - worker.spawned, 3) if alive else None,
        "jobs": snapshot.done if snapshot else 0,
        "failed": snapshot.failed if snapshot else 0,
        "retried": snapshot.retried if snapshot else 0,
        "dead_lettered": snapshot.dead if snapshot else 0,
        "held": snapshot.held if snapshot and alive else 0,
        "job": job,
        "rss": worker_rss(worker, alive, monotonic),
        "max_jobs": worker.max_jobs,
        "draining": draining,
        "broker_error": worker.broker_error,
        "node": worker.node if alive else None,
        "version": worker.version,
        "consuming": worker.consuming,
        "last_exit": worker.last_exit,
    }


def preload_status(name: str, leader: LeaderProc | None,
                   search_path: Sequence[str] = ()) -> dict[str, Any]:
    """Files the leader preloaded that changed on disk since: their code is stale."""
    if leader is None:
        return {"files": 0, "stale": [], "message": None}
    stale: list[str] = []
    for path, mtime in leader.files.items():
        try:
            if os.stat(path).st_mtime != mtime:
                stale.append(path)
        except OSError:
            stale.append(path)
    message = None
    if stale:
        shown = ", ".join(_short(p, search_path) for p in stale[:3])
        shown += " ..." if len(stale) > 3 else ""
        message = f"preload stale: {shown} changed; run reload {name} --preload"
    return {"files": len(leader.files), "stale": stale, "message": message}


def _short(path: str, search_path: Sequence[str]) -> str:
    """A module file as the user knows it: relative to the sys.path entry it came from
    (the daemon's working directory means nothing to them)."""
    for entry in search_path:
        if path.startswith(entry.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, entry)
    return path


def add_slot_details(status: dict[str, Any], program: ProgramRuntime) -> None:
    """Restarts and last exit belong to the slot, which outlives its workers."""
    for entry in status["workers"]:
        slot = program.slot(entry["slot"])
        if slot is not None and not entry["draining"]:
            entry["restarts"] = slot.restarts
            entry["last_exit"] = entry["last_exit"] or slot.last_exit
        else:
            entry.setdefault("restarts", 0)
