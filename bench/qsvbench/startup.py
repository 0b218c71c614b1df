"""Start-up: from launching `qsupervisord -n` to N workers consuming, i.e. the queue's
consumer_count reaching N (passive declares every 10 ms on another connection). The queue
and its topology exist beforehand (a daemon declared them once), as they do on any start
but the very first."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common import (
    APPS_DIR,
    BROKER_URL,
    Broker,
    DepthSampler,
    Settings,
    cpu_seconds,
    cpu_seconds_precise,
    median,
    wait_until,
)
from .daemon import Daemon, program
from .plain import PlainConsumers
from .throughput import broker_pid


def start_once(queue: str, workers: int) -> dict[str, Any]:
    """One start; also the CPU seconds each part used to get there (all of it counts:
    the processes did not exist before)."""
    beam = broker_pid()
    cpu: dict[str, Any] = {}
    with DepthSampler(queue, interval=0.01) as sampler:
        daemon = Daemon({"bench": program(queue, "bench_handlers:noop", workers)})
        try:
            beam_before = cpu_seconds(beam) if beam else None
            daemon.start()
            launched = daemon.started_at
            assert launched is not None
            wait_until(lambda: (daemon._check_alive(), sampler.latest()[2] >= workers)[1],
                       300, f"{workers} consumers", interval=0.01)
            if beam_before is not None:
                cpu["broker"] = (cpu_seconds(beam) or 0) - beam_before
            status = daemon.status()["programs"]["bench"]
            cpu["master"] = cpu_seconds_precise(daemon.master_pid())
            cpu["leader"] = cpu_seconds_precise(int(status["leader_pid"]))
            cpu["workers"] = sum(cpu_seconds_precise(int(w["pid"])) or 0 for w in status["workers"])
        finally:
            daemon.remember_pids()
            daemon.teardown()
        wait_until(lambda: sampler.latest()[2] == 0, 60, "every consumer gone")

    def first(count: int) -> float | None:
        return next((t - launched for t, _, c in sampler.samples if c >= count), None)

    return {"first_s": first(1), "half_s": first(max(1, workers // 2)), "all_s": first(workers),
            "cpu_s": cpu}


def start_plain(queue: str, workers: int) -> float:
    """The same number of separate plain pika consumer processes, for comparison."""
    with DepthSampler(queue, interval=0.01) as sampler:
        consumers = PlainConsumers(queue, workers)
        launched = time.monotonic()
        try:
            consumers.start()
            wait_until(lambda: (consumers.check(), sampler.latest()[2] >= workers)[1], 300,
                       f"{workers} plain consumers", interval=0.01)
        finally:
            consumers.stop()
        wait_until(lambda: sampler.latest()[2] == 0, 60, "every consumer gone")
    return next(t - launched for t, _, c in sampler.samples if c >= workers)


def start_fork_floor(queue: str, workers: int) -> float:
    """A bare fork server (bench/apps/fork_consumers.py): one Python process imports pika
    and forks N children that connect and consume; nothing else. The floor for any
    design that forks its workers, on this machine and broker."""
    with DepthSampler(queue, interval=0.01) as sampler:
        launched = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(APPS_DIR / "fork_consumers.py"), queue,
                                 str(workers), "--broker", BROKER_URL], stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: proc.poll() is None and sampler.latest()[2] >= workers, 300,
                       f"{workers} forked consumers", interval=0.01)
        finally:
            proc.terminate()
            proc.wait(30)
        wait_until(lambda: sampler.latest()[2] == 0, 60, "every consumer gone")
    return next(t - launched for t, _, c in sampler.samples if c >= workers)


def run(settings: Settings, sizes: Sequence[int] = (8, 256),
        separate: bool = True) -> dict[str, Any]:
    if settings.quick:
        sizes = tuple(min(s, 16) for s in sizes)
    broker = Broker()
    results = []
    try:
        for workers in sizes:
            queue = broker.new_queue(f"start{workers}", "quorum")
            start_once(queue, 1)  # declares the topology; not measured
            runs: list[dict[str, Any]] = []
            floor: list[float] = []
            for repeat in range(settings.repeats):
                if repeat % 2:
                    floor.append(start_fork_floor(queue, workers))
                runs.append(start_once(queue, workers))
                if not repeat % 2:
                    floor.append(start_fork_floor(queue, workers))
                settings.say(f"startup N={workers}: first consumer {runs[-1]['first_s']:.2f} s, "
                             f"all {runs[-1]['all_s']:.2f} s; bare fork server {floor[-1]:.2f} s")
            plain = start_plain(queue, workers) if separate else None
            if plain is not None:
                settings.say(f"startup N={workers}: {workers} separate plain consumers "
                             f"{plain:.2f} s")
            results.append({"workers": workers, "runs": runs,
                            "first_s": median([r["first_s"] for r in runs]),
                            "half_s": median([r["half_s"] for r in runs]),
                            "all_s": median([r["all_s"] for r in runs]),
                            "cpu_s": {k: median([r["cpu_s"].get(k) for r in runs])
                                      for k in ("master", "leader", "workers", "broker")},
                            "fork_floor_all_s": median(floor),
                            "fork_floor_runs": floor,
                            "plain_all_s": plain})
    finally:
        broker.close()
    return {"sizes": results}
