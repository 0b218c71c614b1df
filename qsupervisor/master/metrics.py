"""What the Prometheus endpoint shows, read from the master's records at each scrape.

Everything here is a memory read (the workers' stats segments, the master's own state)
except RSS, which status.py caches per worker for a second, and the queue depths, which
only the leader can read from the broker: a scrape serves the latest reading the leader
gave and asks it for a fresh one without waiting, so a scrape never blocks on the broker
(docs/operations.md lists every family).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from typing import Any, Protocol

from qsupervisor import __version__, procutil
from qsupervisor.master.exposition import Family, Labels, render
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.status import preload_status, worker_rss
from qsupervisor.master.totals import EXIT_REASONS, ProgramTotals
from qsupervisor.states import WorkerState
from qsupervisor.stats_segment import DURATION_BUCKETS

# A queue reading older than this is asked for again (the leader itself reads the broker
# at most once a second, whoever asks).
REFRESH = 1.0  # seconds
# ... and one older than this is not shown: the leader that gave it is gone or stuck, and
# an old depth shown as current would mislead more than a gap in the graph.
STALE = 60.0  # seconds
PROGRAM_STATES = ("STOPPED", "STARTING", "RUNNING", "DEGRADED", "STOPPING", "FATAL")


class MetricsSource(Protocol):
    """What the collector reads of the master."""

    loop: EventLoop
    programs: dict[str, ProgramRuntime]
    totals: dict[str, ProgramTotals]
    started: float  # wall clock


class Collector:
    def __init__(self, master: MetricsSource) -> None:
        self.master = master
        self._readings: dict[str, tuple[float, Mapping[str, Any]]] = {}  # monotonic, answer

    def scrape(self) -> bytes:
        return render(self.families()).encode("utf-8")

    def families(self) -> list[Family]:
        f = _Families()
        for name, program in self.master.programs.items():
            self._program(f, name, program)
        self._process(f)
        return f.all()

    def _program(self, f: _Families, name: str, program: ProgramRuntime) -> None:
        clock = self.master.loop.clock
        now, monotonic = clock.time(), clock.monotonic()
        p: Labels = (("program", name),)
        totals = self.master.totals.get(name) or program.pool.totals
        reading = totals.read()
        for outcome, value in totals.outcomes(reading).items():
            f.jobs.add(p + (("outcome", outcome),), value)
        buckets, seconds = totals.durations(reading)
        f.duration.add_histogram(p, DURATION_BUCKETS, buckets, seconds)
        for reason in EXIT_REASONS:
            f.exits.add(p + (("reason", reason),), totals.exits.get(reason, 0))

        states = dict.fromkeys((s.value for s in WorkerState), 0)
        consuming = busy = held = rss = 0
        oldest = 0.0
        for worker in program.workers():
            states[worker.state.value] += 1
            if not worker.alive:
                continue
            consuming += worker.consuming
            rss += worker_rss(worker, True, monotonic) or 0
            if worker.stats is None:
                continue
            snapshot = worker.stats.read()
            held += snapshot.held
            if snapshot.job_started is not None:
                busy += 1
                oldest = max(oldest, now - snapshot.job_started)
        for state, count in states.items():
            f.workers.add(p + (("state", state),), count)
        f.desired.add(p, program.desired)
        f.consumers.add(p, consuming)
        f.busy.add(p, busy)
        f.oldest.add(p, round(oldest, 3))
        f.memory.add(p, rss)
        state = "DEGRADED" if program.degraded() else program.state.value
        for known in PROGRAM_STATES:
            f.state.add(p + (("state", known),), int(known == state))
        f.stale.add(p, int(bool(preload_status(name, program.leader)["stale"])))

        answer = self._queue_reading(name, program, monotonic)
        if answer is not None and answer.get("ready") is not None:
            f.queue.add(p + (("state", "ready"),), int(answer["ready"]))
        # Unacked is what our own workers hold: the broker's figure needs the management
        # plugin, which a stock broker lacks (status shows the same).
        f.queue.add(p + (("state", "unacked"),), held)
        if answer is not None and answer.get("dead_letter_ready") is not None:
            f.dead.add(p, int(answer["dead_letter_ready"]))
        if answer is not None and answer.get("consumers") is not None:
            f.broker_consumers.add(p, int(answer["consumers"]))

    def _queue_reading(self, name: str, program: ProgramRuntime,
                       now: float) -> Mapping[str, Any] | None:
        """The latest good reading, if recent; asks for a newer one without waiting."""
        cached = self._readings.get(name)
        if cached is None or now - cached[0] >= REFRESH:
            def answered(answer: dict[str, Any]) -> None:
                self._readings[name] = (self.master.loop.clock.monotonic(), answer)

            if not program.request_queue_stats(answered):
                self._readings.pop(name, None)  # no leader: nothing current to show
                return None
        cached = self._readings.get(name)
        if cached is None or now - cached[0] >= STALE or cached[1].get("error"):
            return None  # a failed reading is absent, never 0
        return cached[1]

    def _process(self, f: _Families) -> None:
        """The master's own process_* figures, as Prometheus's client libraries name them."""
        f.build.add((("version", __version__),), 1)
        f.start.add((), self.master.started)
        times = os.times()
        f.cpu.add((), round(times.user + times.system, 3))
        f.resident.add((), procutil.read_rss(os.getpid()) or 0)
        try:
            f.open_fds.add((), len(os.listdir("/proc/self/fd")))
        except OSError:
            pass
        f.max_fds.add((), resource.getrlimit(resource.RLIMIT_NOFILE)[0])


class _Families:
    """Every family the endpoint shows, in the order it shows them."""

    def __init__(self) -> None:
        self.jobs = Family("qsupervisor_jobs_total", "counter",
                           "Jobs by outcome: done (acked), failed (retried or dead-lettered), "
                           "and of those retried, dead_lettered, timed_out")
        self.duration = Family("qsupervisor_job_duration_seconds", "histogram",
                               "How long each job ran, from its start to its outcome")
        self.workers = Family("qsupervisor_workers", "gauge", "Worker processes by state")
        self.desired = Family("qsupervisor_workers_desired", "gauge",
                              "Worker slots the program is configured or scaled to")
        self.consumers = Family("qsupervisor_consumers", "gauge",
                                "Workers with their consumer attached to the queue")
        self.busy = Family("qsupervisor_workers_busy", "gauge", "Workers running a job now")
        self.oldest = Family("qsupervisor_job_oldest_running_seconds", "gauge",
                             "How long the longest job running now has run; 0 if none")
        self.memory = Family("qsupervisor_worker_memory_bytes", "gauge",
                             "Resident memory of the program's live workers, summed")
        self.exits = Family("qsupervisor_worker_exits_total", "counter",
                            "Worker exits by reason")
        self.state = Family("qsupervisor_program_state", "gauge",
                            "1 for the program's state (as status shows it), 0 for the others")
        self.stale = Family("qsupervisor_preload_stale", "gauge",
                            "1 if a file the leader preloaded changed on disk since "
                            "(reload --preload runs the new code)")
        self.queue = Family("qsupervisor_queue_messages", "gauge",
                            "Messages in the program's queue: ready (the broker's reading, "
                            "via the leader) and unacked (held by the program's workers)")
        self.dead = Family("qsupervisor_dead_letter_messages", "gauge",
                           "Messages in the program's dead-letter queue")
        self.broker_consumers = Family("qsupervisor_queue_consumers", "gauge",
                                       "Consumers of the program's queue as the broker "
                                       "counts them (any process's)")
        self.build = Family("qsupervisor_build_info", "gauge", "The daemon's version; always 1")
        self.start = Family("process_start_time_seconds", "gauge",
                            "Start time of the master process since the epoch, in seconds")
        self.cpu = Family("process_cpu_seconds_total", "counter",
                          "User and system CPU time of the master process, in seconds")
        self.resident = Family("process_resident_memory_bytes", "gauge",
                               "Resident memory of the master process")
        self.open_fds = Family("process_open_fds", "gauge",
                               "Open file descriptors of the master process")
        self.max_fds = Family("process_max_fds", "gauge",
                              "The master process's limit of open file descriptors")

    def all(self) -> list[Family]:
        return list(vars(self).values())
