"""Autoscaling: a burst of 100 ms jobs, then quiet, run three ways in the same run: a fixed
`min` count, a fixed `max` count, and autoscaled {min, max}. For each: the time to drain the
burst, the worker-seconds used, and the peak workers. Then a steady load (40 % of max's
capacity) held for two minutes (--quick: 10 s) on the autoscaled program: the scale changes
it made and whether their direction changed.

What is counted, identically for the three runs:
- the clock starts just before the burst's first publish (t = 0);
- drain time: until the queue has no ready message and no worker holds one (status and a
  passive declare, polled every 0.25 s), so publishing the burst is in it;
- worker-seconds: live worker processes (draining ones included: they still hold a
  process), sampled from `status` every 0.25 s from t = 0 (during the publishing too), over
  one window the same for every run: from t = 0 to the end of the quiet period, which is
  `quiet` seconds after the time fixed max would need for the burst at full speed (burst ×
  job ÷ max), i.e. 60 s for 900 jobs of 100 ms on 6 workers with 45 s of quiet. A run that
  has not drained by then (fixed min) is counted until it drains, and says so;
- peak workers: the most live worker processes in one sample."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pika

from .common import Broker, Settings, connect, median, wait_until
from .daemon import Daemon, program

JOB = 0.100  # seconds per job
SETTINGS = {"target_wait": "5s", "cooldown_up": "4s", "cooldown_down": "5s", "step_down": 2,
            "window": "6s"}


def run(settings: Settings, low: int = 1, high: int | None = None, burst: int | None = None,
        quiet: float | None = None, steady: float | None = None) -> dict[str, Any]:
    high = high or (3 if settings.quick else 6)
    burst = burst or (30 if settings.quick else 900)
    quiet = quiet if quiet is not None else (3.0 if settings.quick else 45.0)
    steady = steady if steady is not None else (10.0 if settings.quick else 120.0)
    # Fixed min once (it only shows what autoscaling saves over, in drain time); fixed max
    # and autoscaled in pairs, `repeats` times: the tick's phase against the burst moves a
    # run by up to a tick, so one run says little about the margin.
    runs: dict[str, Any] = {"fixed_min": _burst(settings, low, burst, quiet, high)}
    _say(settings, "fixed_min", runs["fixed_min"])
    pairs = []
    for _ in range(settings.repeats):
        pair = {name: _burst(settings, workers, burst, quiet, high)
                for name, workers in (("fixed_max", high), ("auto", {"min": low, "max": high}))}
        for name, run_ in pair.items():
            _say(settings, name, run_)
        pairs.append(pair)
    loads = []
    for _ in range(settings.repeats):
        load = _steady(settings, {"min": low, "max": high}, rate=0.4 * high / JOB, hold=steady)
        settings.say(f"autoscale steady: {load['changes']} changes, "
                     f"directions {load['directions']}")
        loads.append(load)
    drain_ratios = [p["auto"]["drain_s"] / p["fixed_max"]["drain_s"] for p in pairs]
    second_ratios = [p["auto"]["worker_seconds"] / p["fixed_max"]["worker_seconds"]
                     for p in pairs]
    # The tables show the pair whose autoscaled run used the median worker-seconds.
    middle = sorted(range(len(pairs)), key=lambda k: second_ratios[k])[(len(pairs) - 1) // 2]
    runs.update(pairs[middle])
    summary = {
        "low": low, "high": high, "burst": burst, "quiet_s": quiet, "job_s": JOB,
        "autoscale": SETTINGS, "steady_s": steady, "steady_rate": loads[0]["rate"],
        "drain_ratio": median(drain_ratios), "drain_ratios": drain_ratios,
        "worker_seconds_ratio": median(second_ratios), "worker_seconds_ratios": second_ratios,
        "steady_changes": max(load["changes"] for load in loads),
        "steady_direction_changes": max(load["reversals"] for load in loads),
        "steady_runs": len(loads),
    }
    return {"summary": summary, "runs": runs, "pairs": pairs, "steady": loads[0],
            "steadies": loads}


def _say(settings: Settings, name: str, run_: dict[str, Any]) -> None:
    settings.say(f"autoscale {name}: drained {run_['drain_s']:.1f} s, "
                 f"{run_['worker_seconds']:.0f} worker-s, peak {run_['peak']}")


def _config(queue: str, workers: Any) -> dict[str, Any]:
    settings = {"autoscale": SETTINGS} if isinstance(workers, dict) else {}
    return program(queue, "bench_handlers:sleep_100ms", workers=workers, **settings)


class _Counter:
    """Live worker processes sampled from status, integrated into worker-seconds (each
    sample's count held until the next sample)."""

    def __init__(self, daemon: Daemon, started: float) -> None:
        self.daemon = daemon
        self.started = started
        self.worker_seconds = 0.0
        self.peak = 0
        self.counts: list[tuple[float, int, int]] = []  # (t since started, live, desired)
        self.program: dict[str, Any] = {}  # the last sample's status of the program
        self._last: tuple[float, int] | None = None

    def sample(self, until: float | None = None) -> None:
        """Sample now; worker-seconds stop accruing at `until` (seconds since started)."""
        prog = self.daemon.status()["programs"]["bench"]
        live = sum(1 for w in prog["workers"] if w["pid"] and w["state"] != "EXITED")
        now = time.monotonic() - self.started
        if self._last is not None:
            end = now if until is None else min(now, until)
            self.worker_seconds += max(0.0, end - self._last[0]) * self._last[1]
        self._last = (now, live)
        self.program = prog
        self.peak = max(self.peak, live)
        self.counts.append((now, live, prog["desired"]))


def _burst(settings: Settings, workers: Any, count: int, quiet: float,
           high: int) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue("autoscale", "quorum")
    # The window every run is counted over: fixed max's drain at full speed, then the quiet.
    window = count * JOB / high + quiet
    try:
        with Daemon({"bench": _config(queue, workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            channel = broker.conn.channel()
            channel.confirm_delivery()  # each message is in the queue before the drain check
            started = time.monotonic()  # t = 0: just before the first publish
            counter = _Counter(daemon, started)
            counter.sample()
            for i in range(count):
                channel.basic_publish("", queue, json.dumps({"n": i}).encode(),
                                      pika.BasicProperties(content_type="application/json",
                                                           delivery_mode=2))
                if time.monotonic() - started - counter.counts[-1][0] >= 0.25:
                    counter.sample()  # the workers count while the burst is published too
            published = time.monotonic() - started
            drained = None
            while True:
                end = None if drained is None else max(window, drained)
                counter.sample(until=end)
                now = counter.counts[-1][0]
                if drained is None:
                    ready, _ = broker.depth(queue)
                    if ready == 0 and counter.program["summary"]["held"] == 0:
                        drained = now
                if drained is not None and now >= max(window, drained):
                    break
                time.sleep(0.25)
    finally:
        broker.close()
    return {"drain_s": drained, "worker_seconds": counter.worker_seconds, "peak": counter.peak,
            "end_workers": counter.counts[-1][1], "publish_s": published,
            "window_s": max(window, drained), "counts": _timeline(counter.counts)}


def _timeline(counts: list[tuple[float, int, int]]) -> list[tuple[float, int]]:
    """(t, live workers) at each change of the live count."""
    out: list[tuple[float, int]] = []
    for t, live, _ in counts:
        if not out or out[-1][1] != live:
            out.append((round(t, 1), live))
    return out


def _steady(settings: Settings, workers: Any, rate: float, hold: float) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue("autoscale-steady", "quorum")
    stop = threading.Event()
    published = {"sent": 0, "seconds": 0.0}

    def publish() -> None:
        conn = connect()
        channel = conn.channel()
        sent, begun = 0, time.monotonic()
        while not stop.is_set():
            early = begun + sent / rate - time.monotonic()
            if early > 0:  # read once: a second reading could be past `due` already
                time.sleep(min(0.01, early))
                continue
            channel.basic_publish("", queue, json.dumps({"n": sent}).encode(),
                                  pika.BasicProperties(content_type="application/json",
                                                       delivery_mode=2))
            sent += 1
            published.update(sent=sent, seconds=time.monotonic() - begun)
        conn.close()

    try:
        with Daemon({"bench": _config(queue, workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            started = time.monotonic()
            counter = _Counter(daemon, started)
            while time.monotonic() - started < hold:
                counter.sample()
                time.sleep(0.25)
            if not publisher.is_alive():  # a load that stopped early would read as a down
                raise RuntimeError("the steady load's publisher died")
            stop.set()
            publisher.join(10)
            wait_until(lambda: broker.depth(queue)[0] == 0, 120, "the steady load to drain")
    finally:
        broker.close()
    desired = [d for _, _, d in counter.counts]
    steps = [b - a for a, b in zip(desired, desired[1:]) if b != a]
    directions = ["up" if s > 0 else "down" for s in steps]
    reversals = sum(1 for a, b in zip(directions, directions[1:]) if a != b)
    return {"rate": rate, "published": published["sent"],
            "published_rate": published["sent"] / max(published["seconds"], 1e-9),
            "changes": len(steps), "directions": directions,
            "reversals": reversals, "counts": desired[::8], "peak": counter.peak,
            "worker_seconds": counter.worker_seconds}
