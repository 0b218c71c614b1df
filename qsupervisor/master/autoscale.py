"""The autoscaler's rule: pure functions from a program's readings to a worker count.

No clock, no processes, no broker here: `decide` gets every input it needs (the time
included), so the rule is tested on a fake clock (tests/unit/test_autoscale.py), and
master/autoscaler.py does the reading and the applying. The rule, as docs/architecture.md
("Autoscaling") states it:

- up when the estimated wait (ready ÷ completion rate) exceeds target_wait: the workers
  consuming are multiplied by wait ÷ target_wait (the step grows with the excess), never
  past the ready messages that could keep them busy; before any job has finished (no
  rate yet) the wait is ∞ and the step a doubling.
  At most once per cooldown_up, except that a host alone on the queue whose slots are all
  consuming sees the whole effect of its last change in the reading and need not wait;
- down by at most step_down, at most once per cooldown_down after any change, only when
  the wait is below down_below × target_wait, some worker is idle, and the workers left
  would have been busy at most `utilisation` of the window;
- in between (the hysteresis band) the count holds; an unknown queue reading holds too.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

from qsupervisor.config.model import Autoscale

# Workers in one step when the wait is unbounded (ready messages, no completion rate yet):
# double, as a wait twice the target would. A guessed job time was tried instead (a second
# a job): on a steady load it overshot (1→5 for 2.4 workers' worth) and the correction down
# was a change of direction; a doubling followed by a measured step one tick later is not.
UNKNOWN_RATE_FACTOR = 2.0


@dataclass(frozen=True)
class Bounds:
    min: int
    max: int


@dataclass(frozen=True)
class Inputs:
    """One decision's view of the program, taken when the leader's reading arrived."""

    current: int  # slots: running, starting, backing off or crashed alike
    consuming: int  # this host's workers with their consumer attached
    idle: int  # of those, the ones without a job in hand
    ready: int | None  # the broker's ready count; None: the reading failed
    consumers: int | None  # the broker's consumer count (every host's); None: unknown
    per_worker: float | None  # jobs per busy worker-second over the window; None: no job yet
    utilisation: float | None  # busy share of the consuming workers' time over the window
    unknown: str = ""  # why the reading is unknown, when ready is None
    busy: float | None = None  # workers busy on average over the window; None: the
    # utilisation × consuming stands for it


@dataclass(frozen=True)
class Decision:
    direction: str  # up | down | hold
    before: int
    after: int
    reason: str  # the rule that applied, with its figures
    ready: int | None
    consumers: int | None
    rate: float | None  # jobs/s every consumer of the queue completes while busy
    wait: float | None  # seconds; math.inf when ready > 0 and there is no rate yet

    @property
    def text(self) -> str:
        """As status shows it: `up 3→6: wait 41s > 10s (ready 2,460, 60 jobs/s)`."""
        head = (f"{self.direction} {self.before}→{self.after}" if self.direction != "hold"
                else f"hold {self.before}")
        figures = []
        if self.ready is not None:
            figures.append(f"ready {self.ready:,}")
        if self.rate is not None:
            figures.append(f"{_number(self.rate)} jobs/s")
        if self.consumers is not None:
            figures.append(f"{self.consumers} consumers")
        return f"{head}: {self.reason}" + (f" ({', '.join(figures)})" if figures else "")


def completion_rate(per_worker: float | None, consuming: int,
                    consumers: int | None) -> float | None:
    """What every consumer of the queue completes per second while busy. Other hosts'
    consumers are taken to be as fast as ours: they run the same program. None before any
    job has finished."""
    if per_worker is None:
        return None
    return per_worker * max(consuming, consumers or 0)


def estimated_wait(ready: int, rate: float | None) -> float:
    """How long the last ready message waits; infinite with ready messages and no
    consumer, 0 with none ready."""
    if ready <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return math.inf
    return ready / rate


def decide(inputs: Inputs, bounds: Bounds, settings: Autoscale, now: float,
           last_change: float | None) -> Decision:
    """The count to run now. `now` and `last_change` are monotonic seconds."""
    i = inputs
    rate = completion_rate(i.per_worker, i.consuming, i.consumers)

    def result(direction: str, after: int, reason: str,
               wait: float | None = None) -> Decision:
        return Decision(direction, i.current, after, reason, i.ready, i.consumers, rate, wait)

    # The bounds first, whatever the queue says: `update` applies new ones at once.
    if i.current < bounds.min:
        return result("up", bounds.min, f"below min {bounds.min}")
    if i.current > bounds.max:
        return result("down", bounds.max, f"above max {bounds.max}")
    if i.ready is None:
        return result("hold", i.current, f"queue reading unknown ({i.unknown or 'no answer'})")
    wait = estimated_wait(i.ready, rate)
    target = settings.target_wait
    since = math.inf if last_change is None else now - last_change
    if wait > target:
        if i.current >= bounds.max:
            return result("hold", i.current, f"wait {_seconds(wait)} > {_seconds(target)}, "
                                             f"at max {bounds.max}", wait)
        if since < settings.cooldown_up and not alone_on_queue(i.consumers, i.consuming,
                                                                i.current):
            return result("hold", i.current, f"wait {_seconds(wait)} > {_seconds(target)}, "
                                             "up cooldown", wait)
        after = scale_up(i, bounds, settings, wait)
        return result("up", after, f"wait {_seconds(wait)} > {_seconds(target)}", wait)
    band = target * settings.down_below
    if wait >= band:
        return result("hold", i.current, f"wait {_seconds(wait)} within "
                                         f"{_seconds(band)}..{_seconds(target)}", wait)
    if i.current <= bounds.min:
        return result("hold", i.current, f"wait {_seconds(wait)}, at min {bounds.min}", wait)
    if i.idle <= 0:  # a crashed or backing-off slot is no spare room
        return result("hold", i.current, f"wait {_seconds(wait)}, no idle worker", wait)
    # Idle workers, and slots with no consumer (crashed, backing off, starting): the pool
    # drains those first, so a step never takes a busy worker.
    room = min(i.current - bounds.min, i.idle + max(0, i.current - i.consuming))
    step = min(settings.step_down, room)
    busy_share = i.utilisation if i.utilisation is not None else 0.0
    load = i.busy if i.busy is not None else busy_share * i.consuming  # workers' worth

    left = i.current - step
    busy_left = load / left if left > 0 else (math.inf if load > 0 else 0.0)
    if busy_left > settings.utilisation:
        return result("hold", i.current, f"wait {_seconds(wait)}, {left} workers would be "
                                         f"{busy_left:.0%} busy > "
                                         f"{settings.utilisation:.0%}", wait)
    if since < settings.cooldown_down:
        return result("hold", i.current, f"wait {_seconds(wait)}, idle, down cooldown", wait)
    return result("down", left, f"wait {_seconds(wait)} < {_seconds(band)}, idle, "
                                f"{busy_share:.0%} busy", wait)


def alone_on_queue(consumers: int | None, consuming: int, current: int) -> bool:
    """Whether a scale-up may skip cooldown_up. The cooldown lets a reading show the last
    change before the next: other hosts' workers, and ours still starting. Alone on the
    queue (the broker counts no consumer but ours) with every slot consuming, the reading
    already counts them all."""
    return consumers is not None and consumers <= consuming and consuming >= current


def scale_up(i: Inputs, bounds: Bounds, settings: Autoscale, wait: float) -> int:
    """Multiply the consumers by the excess (each host does, on the same reading, so the
    hosts share the backlog in proportion to what they run), capped by the ready messages
    this host's share could keep busy, step_up and max. Slots without a consumer (crashed,
    backing off) are not capacity: they stay counted, and the extra comes on top."""
    factor = UNKNOWN_RATE_FACTOR if math.isinf(wait) else wait / settings.target_wait
    base = max(i.consuming, 1)
    extra = math.ceil(base * factor) - i.consuming
    ready = i.ready or 0
    share = base / max(i.consumers or 0, base)
    extra = min(extra, math.ceil(ready * share))
    if settings.step_up:
        extra = min(extra, settings.step_up)
    return max(i.current + 1, min(bounds.max, i.current + extra))


class Window:
    """A program's job counters sampled at each tick: the completion rate per busy worker
    and the busy share over the last `seconds`, without the lag of jobs ÷ wall time (a
    burst after a quiet spell would read as slow for a whole window)."""

    def __init__(self) -> None:
        # (monotonic, jobs finished, job seconds, workers consuming since the last sample)
        self._samples: collections.deque[tuple[float, int, float, int]] = collections.deque()
        self._per_worker: float | None = None  # the last rate measured, kept while idle

    def add(self, now: float, finished: int, seconds: float, consuming: int,
            span: float) -> None:
        self._samples.append((now, finished, seconds, consuming))
        while len(self._samples) > 2 and now - self._samples[1][0] >= span:
            self._samples.popleft()
        first, last = self._samples[0], self._samples[-1]
        jobs, busy = last[1] - first[1], last[2] - first[2]
        if jobs > 0 and busy > 0:
            self._per_worker = jobs / busy

    @property
    def per_worker(self) -> float | None:
        return self._per_worker

    def export_state(self) -> dict[str, object]:
        return {"samples": [list(s) for s in self._samples], "per_worker": self._per_worker}

    def load_state(self, data: dict[str, Any]) -> None:
        self._samples = collections.deque(
            (float(at), int(jobs), float(busy), int(consuming))
            for at, jobs, busy, consuming in data["samples"])
        self._per_worker = data["per_worker"]

    def busy_workers(self) -> float | None:
        """Workers busy on average over the window (job-seconds ÷ its length): the load in
        workers, whatever the count was; None before two samples."""
        if len(self._samples) < 2:
            return None
        span = self._samples[-1][0] - self._samples[0][0]
        busy = self._samples[-1][2] - self._samples[0][2]
        return busy / span if span > 0 else None

    def utilisation(self) -> float | None:
        """Busy job-seconds ÷ consuming worker-seconds over the window; None before two
        samples."""
        if len(self._samples) < 2:
            return None
        capacity = 0.0
        for (t0, *_), (t1, _, _, consuming) in zip(self._samples, list(self._samples)[1:]):
            capacity += (t1 - t0) * consuming
        busy = self._samples[-1][2] - self._samples[0][2]
        if capacity <= 0:
            return 1.0 if busy > 0 else 0.0
        return min(1.0, busy / capacity)


def _seconds(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s".replace(".0s", "s")


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
