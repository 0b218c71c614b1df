"""Reload: `qsupervisorctl reload PROGRAM` (which waits by default) on a program with 8 idle
workers. Measured: the command's wall time; the time from launching it until every old
worker has exited (read from /proc) with 8 new ones RUNNING; and the lowest consumer count
on the queue seen meanwhile (passive declares every ~5 ms on another connection).
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from .common import (
    QSUPERVISORCTL,
    Broker,
    DepthSampler,
    Settings,
    alive,
    median,
    wait_until,
)
from .daemon import Daemon, program


def reload_once(daemon: Daemon, queue: str, workers: int) -> dict[str, Any]:
    old = daemon.worker_pids("bench")
    assert len(old) == workers, old
    with DepthSampler(queue, interval=0.005) as sampler:
        time.sleep(0.05)  # a few samples before
        launched = time.monotonic()
        proc = subprocess.Popen([QSUPERVISORCTL, "-s", daemon.socket, "reload", "bench"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Poll /proc, not the daemon, so that watching does not slow the master down.
        gone_at = wait_until(lambda: not any(alive(p) for p in old) and time.monotonic(), 60,
                             "every old worker to exit", interval=0.002)
        out, err = proc.communicate(timeout=60)
        returned = time.monotonic()
        if proc.returncode != 0:
            raise RuntimeError(f"reload failed ({proc.returncode}): {out} {err}")
        time.sleep(0.05)
    new = daemon.worker_pids("bench")
    if len(new) != workers or set(new) & set(old) or not daemon.settled("bench"):
        raise RuntimeError(f"reload did not replace every worker: old {old}, new {new}")
    return {"ctl_s": returned - launched, "replaced_s": gone_at - launched,
            "min_consumers": sampler.min_consumers_since(launched),
            "max_consumers": max(c for t, _, c in sampler.samples if t >= launched),
            "samples": len(sampler.samples)}


def run(settings: Settings, workers: int = 8, repeats: int | None = None) -> dict[str, Any]:
    if repeats is None:
        repeats = max(2, settings.repeats) if settings.quick else max(5, settings.repeats)
    broker = Broker()
    queue = broker.new_queue("reload", "quorum")
    runs: list[dict[str, Any]] = []
    try:
        with Daemon({"bench": program(queue, "bench_handlers:noop", workers)}).start() as daemon:
            daemon.wait_settled("bench")
            for _ in range(repeats):
                runs.append(reload_once(daemon, queue, workers))
                settings.say(f"reload: ctl {runs[-1]['ctl_s'] * 1000:.0f} ms, old workers gone "
                             f"{runs[-1]['replaced_s'] * 1000:.0f} ms, min consumers "
                             f"{runs[-1]['min_consumers']}")
                time.sleep(0.5)
    finally:
        broker.close()
    return {"workers": workers, "runs": runs, "summary": {
        "ctl_s": median([r["ctl_s"] for r in runs]),
        "replaced_s": median([r["replaced_s"] for r in runs]),
        "max_ctl_s": max(r["ctl_s"] for r in runs),
        "min_consumers": min(r["min_consumers"] for r in runs),
        "max_consumers": max(r["max_consumers"] for r in runs),
    }}
