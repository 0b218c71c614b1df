"""The job-timeout watchdog: the master's backstop for a worker too stuck to abandon its
own timed-out job (its main thread stuck too, e.g. in C code holding the GIL).

The worker abandons a job that runs past `timeout` by itself; the master kills it only if
it has not left by `timeout` + WATCHDOG_MARGIN. A timer ticks only for programs with a job
timeout, at a fraction of it, and only while the program has live workers.
"""

from __future__ import annotations

from typing import Callable

from qsupervisor.exit_codes import ABANDON_GRACE
from qsupervisor.master.host import Host
from qsupervisor.master.loop import Timer
from qsupervisor.master.process import WorkerProc

WATCHDOG_MARGIN = ABANDON_GRACE + 5.0


class JobWatchdog:
    def __init__(self, host: Host, timeout: Callable[[], float],
                 live: Callable[[], list[WorkerProc]],
                 kill: Callable[[WorkerProc], None]) -> None:
        self._host = host
        self._timeout = timeout  # the program's current `timeout` (0: none)
        self._live = live
        self._kill = kill
        self._timer: Timer | None = None

    def arm(self) -> None:
        timeout = self._timeout()
        if not timeout or self._timer is not None:
            return
        period = max(1.0, min(timeout / 2, 30.0))
        self._timer = self._host.loop.call_later(period, self._watch)

    def _watch(self) -> None:
        self._timer = None
        limit = self._timeout() + WATCHDOG_MARGIN
        now = self._host.loop.clock.time()
        for worker in self._live():
            if worker.stats is None or worker.pid is None:
                continue
            started = worker.stats.read().job_started
            if started is not None and now - started > limit:
                self._kill(worker)
        if self._live():
            self.arm()
