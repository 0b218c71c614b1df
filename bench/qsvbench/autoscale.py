"""Autoscaling: a burst of 100 ms jobs, then quiet, run three ways in the same run: a fixed
`min` count, a fixed `max` count, and autoscaled {min, max}. For each: the time to drain the
burst, the worker-seconds used from the burst to the end of the quiet spell, and the peak
workers. Then a steady load (40 % of max's capacity) held for two minutes (--quick: 10 s)
on the autoscaled program: the scale changes it made and whether their direction changed.

Workers are counted from `status` every 0.25 s (live worker processes, draining ones
included: they still hold a process), so worker-seconds is what the host actually ran."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pika

from .common import Broker, Settings, connect, wait_until
from .daemon import Daemon, program

JOB = 0.100  # seconds per job
SETTINGS = {"target_wait": "5s", "cooldown_up": "4s", "cooldown_down": "10s", "window": "10s"}


def run(settings: Settings, low: int = 1, high: int | None = None, burst: int | None = None,
        quiet: float | None = None, steady: float | None = None) -> dict[str, Any]:
    high = high or (3 if settings.quick else 6)
    burst = burst or (30 if settings.quick else 900)
    quiet = quiet if quiet is not None else (3.0 if settings.quick else 45.0)
    steady = steady if steady is not None else (10.0 if settings.quick else 120.0)
    runs = {}
    for name, workers in (("fixed_min", low), ("fixed_max", high),
                          ("auto", {"min": low, "max": high})):
        runs[name] = _burst(settings, workers, burst, quiet)
        settings.say(f"autoscale {name}: drained {runs[name]['drain_s']:.1f} s, "
                     f"{runs[name]['worker_seconds']:.0f} worker-s, peak "
                     f"{runs[name]['peak']}")
    load = _steady(settings, {"min": low, "max": high}, rate=0.4 * high / JOB, hold=steady)
    settings.say(f"autoscale steady: {load['changes']} changes, directions {load['directions']}")
    maxed = runs["fixed_max"]
    summary = {
        "low": low, "high": high, "burst": burst, "quiet_s": quiet, "job_s": JOB,
        "autoscale": SETTINGS, "steady_s": steady, "steady_rate": load["rate"],
        "drain_ratio": runs["auto"]["drain_s"] / maxed["drain_s"],
        "worker_seconds_ratio": runs["auto"]["worker_seconds"] / maxed["worker_seconds"],
        "steady_changes": load["changes"], "steady_direction_changes": load["reversals"],
    }
    return {"summary": summary, "runs": runs, "steady": load}


def _config(queue: str, workers: Any) -> dict[str, Any]:
    settings = {"autoscale": SETTINGS} if isinstance(workers, dict) else {}
    return program(queue, "bench_handlers:sleep_100ms", workers=workers, **settings)


class _Counter:
    """Live worker processes sampled from status, integrated into worker-seconds."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.worker_seconds = 0.0
        self.peak = 0
        self.counts: list[tuple[float, int, int]] = []  # (t, live, desired)
        self._last: tuple[float, int] | None = None

    def sample(self) -> None:
        prog = self.daemon.status()["programs"]["bench"]
        live = sum(1 for w in prog["workers"] if w["pid"] and w["state"] != "EXITED")
        now = time.monotonic()
        if self._last is not None:
            self.worker_seconds += (now - self._last[0]) * self._last[1]
        self._last = (now, live)
        self.peak = max(self.peak, live)
        self.counts.append((now, live, prog["desired"]))


def _burst(settings: Settings, workers: Any, count: int, quiet: float) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue("autoscale", "quorum")
    try:
        with Daemon({"bench": _config(queue, workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            counter = _Counter(daemon)
            started = time.monotonic()  # the burst arrives while the workers consume
            channel = broker.conn.channel()
            channel.confirm_delivery()  # each message is in the queue before the drain check
            for i in range(count):
                channel.basic_publish("", queue, json.dumps({"n": i}).encode(),
                                      pika.BasicProperties(content_type="application/json",
                                                           delivery_mode=2))
            drained = None
            while True:
                counter.sample()
                ready, _ = broker.depth(queue)
                prog = daemon.status()["programs"]["bench"]
                if drained is None and ready == 0 and prog["summary"]["held"] == 0:
                    drained = time.monotonic() - started
                if drained is not None and time.monotonic() - started >= drained + quiet:
                    break
                time.sleep(0.25)
    finally:
        broker.close()
    return {"drain_s": drained, "worker_seconds": counter.worker_seconds, "peak": counter.peak,
            "end_workers": counter.counts[-1][1]}


def _steady(settings: Settings, workers: Any, rate: float, hold: float) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue("autoscale-steady", "quorum")
    stop = threading.Event()

    def publish() -> None:
        conn = connect()
        channel = conn.channel()
        sent, begun = 0, time.monotonic()
        while not stop.is_set():
            due = begun + sent / rate
            if time.monotonic() < due:
                time.sleep(min(0.01, due - time.monotonic()))
                continue
            channel.basic_publish("", queue, json.dumps({"n": sent}).encode(),
                                  pika.BasicProperties(content_type="application/json",
                                                       delivery_mode=2))
            sent += 1
        conn.close()

    try:
        with Daemon({"bench": _config(queue, workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            counter = _Counter(daemon)
            started = time.monotonic()
            while time.monotonic() - started < hold:
                counter.sample()
                time.sleep(0.25)
            stop.set()
            publisher.join(10)
            wait_until(lambda: broker.depth(queue)[0] == 0, 120, "the steady load to drain")
    finally:
        broker.close()
    desired = [d for _, _, d in counter.counts]
    steps = [b - a for a, b in zip(desired, desired[1:]) if b != a]
    directions = ["up" if s > 0 else "down" for s in steps]
    reversals = sum(1 for a, b in zip(directions, directions[1:]) if a != b)
    return {"rate": rate, "changes": len(steps), "directions": directions,
            "reversals": reversals, "counts": desired[::8], "peak": counter.peak,
            "worker_seconds": counter.worker_seconds}
