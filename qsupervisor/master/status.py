"""The picture `qsupervisorctl status` shows, built from the master's records on demand."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from qsupervisor import __version__, procutil
from qsupervisor.master.process import LeaderProc, WorkerProc
from qsupervisor.master.program import ProgramRuntime


def master_status(started: float, config_path: str) -> Dict[str, Any]:
    return {"pid": os.getpid(), "uptime": round(time.time() - started, 3),
            "config": config_path, "version": __version__}


def program_status(program: ProgramRuntime) -> Dict[str, Any]:
    leader = program.leader
    workers = [worker_status(w, w in program.draining or _is_predecessor(program, w))
               for w in program.workers()]
    status = {
        "state": program.state.value,
        "queue": program.config.queue,
        "leader_pid": leader.pid if leader else None,
        "leader_uptime": round(time.time() - leader.started, 3) if leader else None,
        "desired": program.desired,
        "running": sum(1 for w in workers if w["state"] == "RUNNING" and not w["draining"]),
        "error": program.error,
        "preload": preload_status(program.name, leader),
        "workers": workers,
    }
    add_slot_details(status, program)
    return status


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


def preload_status(name: str, leader: Optional[LeaderProc]) -> Dict[str, Any]:
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
        shown = ", ".join(_short(p) for p in stale[:3]) + (" ..." if len(stale) > 3 else "")
        message = f"preload stale: {shown} changed; run reload {name} --preload"
    return {"files": len(leader.files), "stale": stale, "message": message}


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def add_slot_details(status: Dict[str, Any], program: ProgramRuntime) -> None:
    """Restarts and last exit belong to the slot, which outlives its workers."""
    for entry in status["workers"]:
        slot = program.slots.get(entry["slot"])
        if slot is not None and not entry["draining"]:
            entry["restarts"] = slot.restarts
            entry["last_exit"] = entry["last_exit"] or slot.last_exit
        else:
            entry.setdefault("restarts", 0)
