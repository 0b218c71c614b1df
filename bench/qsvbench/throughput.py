"""Throughput: qsupervisor with N workers against N plain pika consumer processes, draining
the same pre-filled backlog (same queue type, prefetch and job), both sides in the same run,
alternating which goes first, repeated.

Steady state: the rate is measured between the moment the queue depth (ready messages,
sampled every 10 ms with passive declares on a separate connection) has fallen to 90 % of
the backlog and the moment it falls to 10 %; if not every consumer is attached yet at the
90 % mark, the window starts when the last one attaches instead. Start-up (process start,
imports, connecting, the daemon's topology declaration) therefore never counts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, Callable

from .common import (
    Broker,
    DepthSampler,
    Settings,
    cpu_seconds,
    crossing,
    median,
    pair_ratios,
    ratio,
    retrying,
)
from .daemon import Daemon, program
from .plain import PlainConsumers

PREFETCH = 10
HANDLERS = {"noop": "bench_handlers:noop", "1ms": "bench_handlers:sleep_1ms",
            "10ms": "bench_handlers:sleep_10ms"}
SIDES = ("plain", "qsupervisor")


def backlog(job: str, workers: int, quick: bool) -> int:
    """Messages to pre-fill: 55,000 for the no-op job (the issue's reference backlog);
    for sleeping jobs about 3 s of work at the ideal rate, so a run stays short."""
    if job == "noop":
        return 3_000 if quick else 55_000
    per_worker_rate = 1000 if job == "1ms" else 100
    seconds = 0.6 if quick else 3.0
    return max(100, int(per_worker_rate * workers * seconds))


def broker_pid() -> int | None:
    """RabbitMQ's Erlang VM, to show how busy the broker is (None if not found)."""
    import os
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"beam.smp" in f.read().split(b"\0")[0]:
                        return int(entry)
            except OSError:
                continue
    return None


def drain_once(broker: Broker, side: str, queue_type: str, workers: int, job: str,
               count: int, settings: Settings,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    queue = broker.new_queue(f"tp-{side[0]}{workers}", queue_type)
    try:
        fill_seconds = broker.fill(queue, count)
        with DepthSampler(queue, interval=0.01) as sampler:
            launched = time.monotonic()
            if side == "plain":
                with PlainConsumers(queue, workers, PREFETCH, job) as consumers:
                    measured = _watch(sampler, workers, count, lambda: consumers.pids,
                                      consumers.check)
            else:
                prog = program(queue, HANDLERS[job], workers, prefetch=PREFETCH,
                               queue_type=queue_type)
                with Daemon({"bench": prog}).start(env) as daemon:
                    measured = _watch(sampler, workers, count,
                                      lambda: daemon.worker_pids("bench"), daemon._check_alive)
        samples = list(sampler.samples)
    finally:
        broker.delete(queue)
        broker.queues.remove(queue)
    return _rate(samples, launched, workers, count, fill_seconds, measured)


def _watch(sampler: DepthSampler, workers: int, count: int, pids: Callable[[], list[int]],
           check: Callable[[], None]) -> dict[str, Any]:
    """Wait for the backlog to drain; read the consumers' and the broker's CPU time between
    the moment all consumers are attached and the end."""
    beam = broker_pid()
    deadline = time.monotonic() + 600
    first: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        check()
        t, depth, consumers = sampler.latest()
        if first is None and consumers >= workers:
            watched = pids()
            first = {"t": t, "depth": depth, "pids": watched,
                     "cpu": sum(cpu_seconds(p) or 0.0 for p in watched),
                     "beam": cpu_seconds(beam) if beam else None}
        if depth == 0 and first is not None:
            cpu = sum(cpu_seconds(p) or 0.0 for p in first["pids"])
            beam_cpu = cpu_seconds(beam) if beam and first["beam"] is not None else None
            done = first["depth"]
            elapsed = t - first["t"]
            return {
                "consumer_cpu_us_per_msg": (cpu - first["cpu"]) / done * 1e6 if done else None,
                "broker_cpu_us_per_msg": ((beam_cpu - first["beam"]) / done * 1e6
                                          if done and beam_cpu is not None else None),
                "consumer_cpu_share": (cpu - first["cpu"]) / elapsed if elapsed > 0 else None,
            }
        time.sleep(0.02)
    raise TimeoutError("the backlog did not drain within 600 s")


def _rate(samples: Sequence, launched: float, workers: int, count: int, fill_seconds: float,
          measured: dict[str, Any]) -> dict[str, Any]:
    attached = next((t for t, _, c in samples if c >= workers), None)
    at_90 = crossing(samples, 0.9 * count)
    at_10 = crossing(samples, 0.1 * count)
    empty = crossing(samples, 0)
    if at_90 is None or at_10 is None or attached is None:
        raise RuntimeError("the depth samples do not cover the drain")
    start, start_depth, note = at_90, 0.9 * count, ""
    if attached > at_90:
        start = attached
        start_depth = _depth_at(samples, attached)
        note = "window started when the last consumer attached"
    if start >= at_10 or start_depth <= 0.1 * count:
        # Everything worth measuring happened before all consumers were there.
        start, start_depth = at_90, 0.9 * count
        note = "not all consumers were attached before 10 % was left"
    rate = (start_depth - 0.1 * count) / (at_10 - start)
    return {"rate": rate, "window_s": at_10 - start, "window_msgs": start_depth - 0.1 * count,
            "attach_s": attached - launched, "launch_to_empty_s": (empty or at_10) - launched,
            "fill_s": fill_seconds, "samples": len(samples), "note": note, **measured}


def _depth_at(samples: Sequence, when: float) -> float:
    previous = None
    for t, depth, _ in samples:
        if t >= when:
            if previous is None or t == previous[0]:
                return float(depth)
            t0, d0 = previous
            return d0 + (depth - d0) * (when - t0) / (t - t0)
        previous = (t, depth)
    return float(samples[-1][1])


def run(settings: Settings, workers: Sequence[int] = (1, 2, 4, 8),
        queue_types: Sequence[str] = ("quorum", "classic"),
        jobs: Sequence[str] = ("noop", "1ms", "10ms")) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    broker = Broker()
    try:
        for queue_type in queue_types:
            for job in jobs:
                for repeat in range(settings.repeats):
                    for n in workers:
                        sides = SIDES if (repeat + n) % 2 == 0 else tuple(reversed(SIDES))
                        for side in sides:
                            count = backlog(job, n, settings.quick)
                            result = retrying(
                                f"{queue_type} {job} N={n} {side}",
                                functools.partial(drain_once, broker, side, queue_type, n,
                                                  job, count, settings), settings)
                            result.update(side=side, queue_type=queue_type, workers=n, job=job,
                                          repeat=repeat, backlog=count)
                            runs.append(result)
                            settings.say(f"throughput {queue_type} {job} N={n} {side}: "
                                         f"{result['rate']:,.0f} msg/s {result['note']}")
    finally:
        broker.close()
    return {"prefetch": PREFETCH, "repeats": settings.repeats, "runs": runs,
            "summary": summarize(runs)}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = sorted({(r["queue_type"], r["job"], r["workers"]) for r in runs},
                  key=lambda k: (k[0] != "quorum", ["noop", "1ms", "10ms"].index(k[1]), k[2]))
    rows = []
    for queue_type, job, n in keys:
        mine = [r for r in runs if (r["queue_type"], r["job"], r["workers"]) == (queue_type, job, n)]
        row: dict[str, Any] = {"queue_type": queue_type, "job": job, "workers": n,
                               "backlog": mine[0]["backlog"]}
        for side in SIDES:
            ours = [r for r in mine if r["side"] == side]
            row[side] = {
                "median": median([r["rate"] for r in ours]),
                "all": [round(r["rate"]) for r in ours],
                "consumer_cpu_us_per_msg": median([r["consumer_cpu_us_per_msg"] for r in ours]),
                "broker_cpu_us_per_msg": median([r["broker_cpu_us_per_msg"] for r in ours]),
                "attach_s": median([r["attach_s"] for r in ours]),
            }
        row["ratio"] = ratio(row["qsupervisor"]["median"], row["plain"]["median"])
        # Per-repeat ratios (each pair ran back to back) show how much noise there is.
        row["pair_ratios"] = pair_ratios(mine, lambda r: r["side"], "qsupervisor", "plain")
        rows.append(row)
    return rows



