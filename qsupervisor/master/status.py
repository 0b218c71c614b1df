"""The picture `qsupervisorctl status` shows, built from the master's records on demand."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence

from qsupervisor import __version__, procutil
from qsupervisor.master.process import LeaderProc, WorkerProc
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.states import WorkerState


def master_status(started: float, config_path: str) -> Dict[str, Any]:
    return {"pid": os.getpid(), "uptime": round(time.time() - started, 3),
            "config": config_path, "version": __version__}


def program_status(program: ProgramRuntime, search_path: Sequence[str] = ()) -> Dict[str, Any]:
    leader = program.leader
    workers = []
    for worker in program.workers():
        entry = worker_status(worker, worker in program.draining)
        # Old code still consuming until its successor is RUNNING (a rolling reload).
        entry["superseded"] = _is_predecessor(program, worker)
        workers.append(entry)
    status = {
        "state": program.state.value,
        "queue": program.config.queue,
        "leader_pid": leader.pid if leader else None,
        "leader_uptime": round(time.time() - leader.started, 3) if leader else None,
        "desired": program.desired,
        "running": _serving_slots(program),
        "error": program.error,
        "preload": preload_status(program.name, leader, search_path),
        "workers": workers,
    }
    add_slot_details(status, program)
    return status


def _serving_slots(program: ProgramRuntime) -> int:
    """Slots with a RUNNING consumer: the current worker, or the one it is replacing."""
    serving = 0
    for index in range(program.desired):
        slot = program.slots.get(index)
        if slot is not None and any(w is not None and w.state is WorkerState.RUNNING
                                    for w in (slot.worker, slot.predecessor)):
            serving += 1
    return serving


def _is_predecessor(program: ProgramRuntime, worker: WorkerProc) -> bool:
    return any(slot.predecessor is worker for slot in program.slots.values())


def worker_status(worker: WorkerProc, draining: bool) -> Dict[str, Any]:
    jobs = failed = 0
    job: Optional[Dict[str, Any]] = None
    if worker.stats is not None:
        jobs, failed, job_id, job_started = worker.stats.read()
        if job_id is not None and job_started is not None and worker.alive:
            job = {"id": job_id, "running_for": round(max(0.0, time.time() - job_started), 3)}
    return {
        "slot": worker.slot,
        "pid": worker.pid,
        "state": worker.state.value,
        "uptime": round(time.time() - worker.spawned, 3) if worker.alive else None,
        "jobs": jobs,
        "failed": failed,
        "job": job,
        "rss": procutil.read_rss(worker.pid) if worker.pid and worker.alive else None,
        "max_jobs": worker.max_jobs,
        "draining": draining,
        "broker_error": worker.broker_error,
        "last_exit": worker.last_exit,
    }


def preload_status(name: str, leader: Optional[LeaderProc],
                   search_path: Sequence[str] = ()) -> Dict[str, Any]:
    """Files the leader preloaded that changed on disk since: their code is stale."""
    if leader is None:
        return {"files": 0, "stale": [], "message": None}
    stale: List[str] = []
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


def add_slot_details(status: Dict[str, Any], program: ProgramRuntime) -> None:
    """Restarts and last exit belong to the slot, which outlives its workers."""
    for entry in status["workers"]:
        slot = program.slots.get(entry["slot"])
        if slot is not None and not entry["draining"]:
            entry["restarts"] = slot.restarts
            entry["last_exit"] = entry["last_exit"] or slot.last_exit
        else:
            entry.setdefault("restarts", 0)
