"""The summary the master hands its herald each interval, to announce on the broker.

Built from what `status` reads anyway (the records and the stats segments), without the
per-worker entries, preload checks or broker readings: it runs every few seconds on an
idle daemon too. The herald adds the queue depths (it holds a broker connection; the
master never does) and picks the fields that go out (herald/announce.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from qsupervisor import __version__
from qsupervisor.config import DaemonConfig
from qsupervisor.master import status as status_view
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.system import Clock


def summary(programs: Iterable[ProgramRuntime], daemon: DaemonConfig, started: float,
            clock: Clock) -> dict[str, Any]:
    return {"node": daemon.node_name, "pid": os.getpid(), "version": __version__,
            "uptime": round(clock.time() - started, 3), "interval": daemon.fleet.interval,
            "programs": [program_summary(p, clock) for p in programs]}


def program_summary(program: ProgramRuntime, clock: Clock) -> dict[str, Any]:
    workers = status_view.workers_summary(program, clock)
    minute = status_view.last_minute(workers.snapshots, program.recent_exits())
    return {"name": program.name,
            "state": "DEGRADED" if program.degraded() else program.state.value,
            "queue": program.config.queue, "workers": program.serving(),
            "desired": program.desired, "consuming": program.consuming(),
            "busy": workers.busy, "done_last_minute": minute["done"],
            "failed_last_minute": minute["failed"]}


def only_program(nodes: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """`fleet --program NAME`: the daemons that run it, with that program alone."""
    found = []
    for node in nodes:
        programs = [p for p in node.get("programs") or [] if p.get("name") == name]
        if programs:
            found.append({**node, "programs": programs})
    return found
