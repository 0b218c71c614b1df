"""Idle master: CPU seconds the master uses over 60 s (--quick: 5 s, 8 workers) with 64 idle
workers on an empty queue, nobody talking to the daemon during the window; and what the
leader and the workers used over the same window. Read from /proc/PID/task/*/schedstat
(nanoseconds, every thread), and also utime+stime from /proc/PID/stat (10 ms ticks)."""

from __future__ import annotations

import time
from typing import Any

from .common import CLOCK_TICKS, Broker, Settings, cpu_seconds, cpu_seconds_precise
from .daemon import Daemon, program


def run(settings: Settings, workers: int | None = None,
        window: float | None = None) -> dict[str, Any]:
    window = window or (5.0 if settings.quick else 60.0)
    workers = workers or (8 if settings.quick else 64)
    broker = Broker()
    queue = broker.new_queue("idle", "quorum")
    try:
        with Daemon({"bench": program(queue, "bench_handlers:noop", workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            master = daemon.master_pid()
            leader = daemon.leader_pid("bench")
            pids = daemon.worker_pids("bench")
            time.sleep(2.0)  # let start-up finish (late acks, logs)

            def reading() -> dict[str, float]:
                return {"master": cpu_seconds_precise(master) or 0.0,
                        "leader": cpu_seconds_precise(leader) or 0.0,
                        "workers": sum(cpu_seconds_precise(p) or 0.0 for p in pids),
                        "master_ticks": cpu_seconds(master) or 0.0}

            before, started = reading(), time.monotonic()
            time.sleep(window)
            after, elapsed = reading(), time.monotonic() - started
            if not daemon.settled("bench"):
                raise RuntimeError("the workers did not stay RUNNING through the idle window")
    finally:
        broker.close()
    used = {k: after[k] - before[k] for k in before}
    summary = {
        "workers": workers, "window_s": elapsed, "tick_s": 1 / CLOCK_TICKS,
        "master_cpu_s": used["master"], "leader_cpu_s": used["leader"],
        "workers_cpu_s": used["workers"], "master_cpu_ticks_s": used["master_ticks"],
        "master_pct_core": used["master"] / elapsed * 100,
        "workers_pct_core": used["workers"] / elapsed * 100,
    }
    settings.say(f"idle: master {used['master']:.2f} s CPU in {elapsed:.0f} s "
                 f"({summary['master_pct_core']:.3f} % of a core), workers {used['workers']:.2f} s")
    return {"summary": summary}
