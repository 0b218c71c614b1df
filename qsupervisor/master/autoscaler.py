"""A program's autoscaler as the master runs it: a timer every INTERVAL while the program
is autoscaled and not stopped, the leader's queue reading asked without waiting, the rule
of autoscale.py applied through the pool, and what status shows of it.

The master never blocks: the reading is the leader's (a passive declare, never the
management plugin), asked through the same single in-flight request as status and the
metrics endpoint, and the decision is taken when the answer comes in. A request that finds
no leader, fails, or is still unanswered at the next tick is an unknown reading: the count
holds and the decision says why.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from qsupervisor import logs
from qsupervisor.config import ProgramConfig
from qsupervisor.master.autoscale import Bounds, Decision, Inputs, Window, alone_on_queue, decide
from qsupervisor.master.host import Host
from qsupervisor.master.loop import Timer
from qsupervisor.master.pool import WorkerPool

log = logs.get("qsupervisor.master")

INTERVAL = 2.0  # seconds between decisions


class Scaled(Protocol):
    """What the autoscaler needs of its program (program.py's ProgramRuntime)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> ProgramConfig: ...
    @property
    def running(self) -> bool: ...
    @property
    def stopped(self) -> bool: ...
    pool: WorkerPool

    def request_queue_stats(self, callback: Any) -> bool: ...


class Autoscaler:
    def __init__(self, program: Scaled, host: Host) -> None:
        self.program = program
        self.host = host
        self.pinned: int | None = None  # `scale PROGRAM N` until `scale PROGRAM --auto`
        self.last: Decision | None = None
        self.last_at: float | None = None  # wall clock of the last decision
        self.last_change: float | None = None  # monotonic, of the last change of count
        self.window = Window()
        self._timer: Timer | None = None
        self._asked_at: float | None = None  # monotonic; a request not yet answered
        self._logged = ""  # the last hold logged, without its figures

    @property
    def active(self) -> bool:
        return self.program.config.autoscaled and self.pinned is None

    def bounds(self) -> Bounds:
        config = self.program.config
        return Bounds(config.workers, config.workers_max or config.workers)

    def arm(self) -> None:
        """Start ticking (the program started, or became autoscaled)."""
        if self._timer is None and self.program.config.autoscaled:
            self._timer = self.host.loop.call_later(INTERVAL, self._tick)

    def pin(self, workers: int | None) -> None:
        """`scale N` pins (None: `scale --auto` releases; the next tick decides)."""
        self.pinned = workers if self.program.config.autoscaled else None
        self._asked_at = None

    def configured(self) -> None:
        """New settings (update): bounds apply at once; a program no longer autoscaled
        forgets its pin."""
        if not self.program.config.autoscaled:
            self.pinned = None
            return
        self.arm()
        if self.active and self.program.running:
            bounds, current = self.bounds(), self.program.pool.desired
            if not bounds.min <= current <= bounds.max:
                self._decided(decide(self._inputs(None, None, "bounds changed"), bounds,
                                     self.program.config.autoscale,
                                     self.host.loop.clock.monotonic(), self.last_change))

    def start_count(self, configured: int) -> int:
        """The count a (re)started or reconfigured program runs: a reload keeps the
        current one, within the bounds."""
        if not self.program.config.autoscaled:
            return configured
        if self.pinned is not None:
            return self.pinned
        bounds = self.bounds()
        return min(bounds.max, max(bounds.min, self.program.pool.desired))

    # -- handing over through a re-exec ----------------------------------------------

    def export_state(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "last_at": self.last_at,
                "last": dataclasses.asdict(self.last) if self.last is not None else None,
                "last_change": self.last_change, "window": self.window.export_state(),
                "logged": self._logged}

    def load_state(self, data: dict[str, Any]) -> None:
        """As it was; a reading asked of the leader before the exec is asked again at the
        next tick."""
        self.pinned = data["pinned"]
        self.last = Decision(**data["last"]) if data["last"] is not None else None
        self.last_at, self.last_change = data["last_at"], data["last_change"]
        self.window.load_state(data["window"])
        self._logged = str(data["logged"])
        if not self.program.stopped:
            self.arm()

    # -- the tick -----------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        if not self.program.config.autoscaled or self.program.stopped:
            return  # start() arms it again
        self._timer = self.host.loop.call_later(INTERVAL, self._tick)
        clock = self.host.loop.clock
        now = clock.monotonic()
        pool = self.program.pool
        totals = pool.totals.read()
        self.window.add(now, totals.finished, totals.seconds, pool.consuming(),
                        self.program.config.autoscale.window)
        if not self.active or not self.program.running:
            self._asked_at = None
            return
        if self._asked_at is not None and now - self._asked_at >= INTERVAL:
            self._asked_at = None
            self._decide(None, None, f"no answer from the leader in {INTERVAL:g}s")
        if self._asked_at is not None:
            return
        self._asked_at = now
        if not self.program.request_queue_stats(self._answered):
            self._asked_at = None
            self._decide(None, None, "no leader to read the queue")

    def _answered(self, answer: dict[str, Any]) -> None:
        self._asked_at = None
        if not self.active or not self.program.running:
            return
        if answer.get("error"):
            self._decide(None, None, str(answer["error"]))
            return
        ready, consumers = answer.get("ready"), answer.get("consumers")
        self._decide(int(ready) if isinstance(ready, int) else None,
                     int(consumers) if isinstance(consumers, int) else None,
                     "" if isinstance(ready, int) else "no ready count")

    def _inputs(self, ready: int | None, consumers: int | None, unknown: str) -> Inputs:
        pool = self.program.pool
        _busy, idle = pool.busy_and_idle()
        return Inputs(current=pool.desired, consuming=pool.consuming(), idle=idle,
                      ready=ready, consumers=consumers, per_worker=self.window.per_worker,
                      utilisation=self.window.utilisation(), unknown=unknown,
                      busy=self.window.busy_workers())

    def _decide(self, ready: int | None, consumers: int | None, unknown: str) -> None:
        inputs = self._inputs(ready, consumers, unknown)
        self._decided(decide(inputs, self.bounds(), self.program.config.autoscale,
                             self.host.loop.clock.monotonic(), self.last_change))

    def _decided(self, decision: Decision) -> None:
        pool = self.program.pool
        self.last, self.last_at = decision, self.host.loop.clock.time()
        if decision.after != pool.desired:
            self.last_change = self.host.loop.clock.monotonic()
            if decision.after < pool.desired:
                pool.shrink_idle_first(decision.after)
            else:
                pool.desired = decision.after
                pool.fill()
            self.host.changed()
        self._log(decision)

    def _log(self, decision: Decision) -> None:
        """One line per decision that changes the count, and one when the count starts
        holding for a new reason (a hold every INTERVAL would bury the log)."""
        key = f"{decision.direction}:{_hold_kind(decision.reason)}"
        if decision.direction == "hold" and key == self._logged:
            return
        self._logged = key
        emit = log.warning if decision.reason.startswith("queue reading unknown") else log.info
        emit("autoscale", program=self.program.name, decision=decision.text,
             direction=decision.direction, before=decision.before, after=decision.after,
             ready=decision.ready, consumers=decision.consumers,
             rate=None if decision.rate is None else round(decision.rate, 2),
             wait=_json_seconds(decision.wait))

    # -- what status shows --------------------------------------------------------------

    def view(self) -> dict[str, Any] | None:
        config = self.program.config
        if not config.autoscaled:
            return None
        clock = self.host.loop.clock
        now, wall = clock.monotonic(), clock.time()
        settings = config.autoscale
        last = self.last

        def next_at(cooldown: float) -> float:
            if self.last_change is None:
                return round(wall, 3)
            return round(wall + max(0.0, self.last_change + cooldown - now), 3)

        pool = self.program.pool
        # As decide() does: alone on the queue (the last reading's consumers) with every
        # slot consuming, a scale-up need not wait for cooldown_up.
        skips_cooldown = last is not None and alone_on_queue(last.consumers, pool.consuming(),
                                                             pool.desired)

        return {
            "min": config.workers, "max": config.workers_max,
            "current": self.program.pool.desired,
            "target": self.pinned if self.pinned is not None
            else (last.after if last is not None else self.program.pool.desired),
            "pinned": self.pinned,
            "target_wait": settings.target_wait,
            "last_decision": None if last is None else {
                "text": last.text, "direction": last.direction, "before": last.before,
                "after": last.after, "reason": last.reason, "ready": last.ready,
                "consumers": last.consumers,
                "rate": None if last.rate is None else round(last.rate, 3),
                "wait": _json_seconds(last.wait), "at": self.last_at},
            # When the cooldowns allow the next change each way (wall clock; now if past).
            "next_up_at": next_at(0.0 if skips_cooldown else settings.cooldown_up),
            "next_down_at": next_at(settings.cooldown_down),
        }


def _hold_kind(reason: str) -> str:
    """A hold's reason without its changing figures: 'up cooldown', 'at max 6', ..."""
    return "".join(c for c in reason if not c.isdigit() and c not in ".∞s%")


def _json_seconds(value: float | None) -> float | None:
    if value is None or value != value or value == float("inf"):
        return None
    return round(value, 3)
