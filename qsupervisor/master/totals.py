"""A program's job and worker-exit counters, for the daemon's lifetime.

Each worker counts its jobs in its own stats segment, which goes with it. Prometheus wants
counters that never go backwards while the daemon runs, through recycling, reloads, a new
leader, scale and update, so the master folds the last reading of every worker it reaps
into the program's totals here, and a reading is those totals plus the live workers'
segments. The master keeps one ProgramTotals per program name (arbiter.py): an `update`
that changes a program, or removes it and adds it back, keeps its counters. Nothing is
written to disk: a daemon restart starts from zero, which Prometheus's rate() expects.
"""

from __future__ import annotations

from typing import Any

from qsupervisor.master.exits import Exit, ExitKind
from qsupervisor.stats_segment import (
    DURATION_BUCKETS,
    EMPTY_TOTALS,
    Stats,
    Totals,
    add_totals,
    cumulative,
)

# The outcomes of qsupervisor_jobs_total; docs/operations.md defines each.
OUTCOMES = ("done", "failed", "retried", "dead_lettered", "timed_out")
# The reasons of qsupervisor_worker_exits_total, in the order the endpoint lists them.
EXIT_REASONS = ("max_jobs", "max_memory", "max_age", "reload", "scale", "stopped",
                "timeout", "killed", "failed", "crashed")
_RECYCLES = frozenset({"max_jobs", "max_memory", "max_age"})


def exit_reason(meaning: Exit, stop_reason: str | None, said: str | None) -> str:
    """The worker-exit counter's label for an exit exits.py has classified."""
    if meaning.kind is ExitKind.RECYCLED:
        return str(said) if said in _RECYCLES else "stopped"
    if meaning.kind is ExitKind.STOPPED:
        return str(stop_reason) if stop_reason in ("reload", "scale") else "stopped"
    if meaning.kind is ExitKind.TIMED_OUT:
        return "timeout"
    if meaning.kind in (ExitKind.KILLED, ExitKind.REDELIVERED):
        return "killed"
    return "failed" if meaning.kind is ExitKind.FAILED else "crashed"


class ProgramTotals:
    def __init__(self) -> None:
        self._gone = EMPTY_TOTALS  # the last readings of the workers reaped so far
        self._live: dict[int, Stats] = {}  # id(worker) -> its segment
        # Jobs the master killed (or that left unsettled) at their timeout: the worker
        # could not count them, and the redelivered message counts as a failure later.
        self._timed_out_unsettled = 0
        self.exits: dict[str, int] = dict.fromkeys(EXIT_REASONS, 0)
        # What each series last showed. A reading races the workers' writes (a torn read
        # can pair a new total with an old failure count), so done = finished - failed
        # could dip by one; the endpoint shows the highest value it has shown instead.
        self._high: dict[str, float] = {}

    def worker_started(self, worker: object, stats: Stats) -> None:
        self._live[id(worker)] = stats

    def worker_gone(self, worker: object, reason: str, timed_out_in_hand: bool) -> None:
        """Fold a reaped worker's last reading in; called once per worker."""
        stats = self._live.pop(id(worker), None)
        if stats is not None:
            self._gone = add_totals(self._gone, stats.totals())
        self._timed_out_unsettled += timed_out_in_hand
        self.exits[reason] = self.exits.get(reason, 0) + 1

    def export_state(self) -> dict[str, object]:
        """What a re-exec hands over: the live workers' segments are their own records'."""
        return {"gone": list(self._gone), "timed_out_unsettled": self._timed_out_unsettled,
                "exits": dict(self.exits), "high": dict(self._high)}

    def load_state(self, data: dict[str, Any]) -> None:
        finished, failed, retried, dead, timed_out, buckets, seconds = data["gone"]
        self._gone = Totals(int(finished), int(failed), int(retried), int(dead),
                            int(timed_out), tuple(int(b) for b in buckets), float(seconds))
        self._timed_out_unsettled = int(data["timed_out_unsettled"])
        self.exits.update({str(k): int(v) for k, v in data["exits"].items()})
        self._high = {str(k): float(v) for k, v in data["high"].items()}

    def read(self) -> Totals:
        """Every job counted so far: the exited workers' and the live ones'."""
        total = self._gone
        for stats in self._live.values():
            total = add_totals(total, stats.totals())
        return total

    def outcomes(self, total: Totals) -> dict[str, int]:
        values = {
            "done": total.finished - total.failed,
            "failed": total.failed,
            "retried": total.retried,
            "dead_lettered": total.dead,
            "timed_out": total.timed_out + self._timed_out_unsettled,
        }
        return {name: int(self._highest(name, value)) for name, value in values.items()}

    def durations(self, total: Totals) -> tuple[list[int], float]:
        """The histogram's cumulative buckets (+Inf last) and its sum."""
        counts = [int(self._highest(f"le{index}", value))
                  for index, value in enumerate(cumulative(total.buckets))]
        return counts, self._highest("sum", total.seconds)

    def _highest(self, key: str, value: float) -> float:
        shown = max(value, self._high.get(key, value))
        self._high[key] = shown
        return shown


assert len(DURATION_BUCKETS) + 1 == len(EMPTY_TOTALS.buckets)
