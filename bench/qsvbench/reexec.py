"""Re-exec: `qsupervisorctl reexec` and `reexec --all` on a daemon with one program of N idle
workers (8 and 256), each repeated.

Socket: a separate process (bench/apps/socket_probe.py) asks the control socket over and
over, a new connection per request with a 2 ms pause between them (`version`; every 50 ms
a `status` without worker entries instead, whose `consuming` figure is kept). What "does
not answer" means here is seen from that client: the longest time between two consecutive
answers, from launching `qsupervisorctl reexec` to 0.5 s after it returned (a request made
during the exec waits in the socket's backlog and counts until the new image answers it),
and the longest one over the exec itself (from the log's `re-executing` to its
`qsupervisord re-executed`; for `--all`, the reloads that follow are apart).
Also the longest a single request waited, any request that failed, and the same longest
gap over the 0.5 s before the launch (the probe's own floor). The daemon's own figure is
`took_ms` of its reply (from the exec to the records rebuilt, just before it serves), and
its log gives the time from the request to the exec (settling and the pre-flight check,
during which the old image answers). Each run starts once the machine has been at most
15 % busy for 0.5 s (or after 30 s), so that it does not measure the tail of the one before.

Consumers: the queue's consumer count from the broker (passive declares every 20 ms on
another connection) over the same window; its lowest value against the configured N.

Master: its CPU time and its time runnable but waiting for a CPU, from the launch to the
reply (/proc/PID/schedstat). After `reexec` the master, the leader and every worker must
keep their pids; after `reexec --all` (and `reload --preload`, run beside them for
comparison) the master keeps its pid and the leader and every worker are new.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import (
    APPS_DIR,
    QSUPERVISORCTL,
    Broker,
    DepthSampler,
    Settings,
    median,
)
from .daemon import Daemon, program

PROBE = str(APPS_DIR / "socket_probe.py")
PROBE_PAUSE = 0.002
STATUS_EVERY = 0.05
SAMPLE_INTERVAL = 0.02
BEFORE = 0.5  # seconds watched before the launch (the floor) and after the reply
TARGET_GAP_MS = 200.0
QUIET_LIMIT = 0.15  # share of the machine's CPU busy, at most, before each run
MODES = ("reexec", "reexec --all", "reload --preload")


class Probe:
    """socket_probe.py against the daemon's socket, from `with` to its end."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.out = Path(tempfile.mkstemp(prefix="qsv-bench-probe-", suffix=".json")[1])
        self.proc: subprocess.Popen | None = None
        self.probes: list[list[Any]] = []
        self.failures: list[list[Any]] = []

    def __enter__(self) -> Probe:
        self.proc = subprocess.Popen(
            [sys.executable, PROBE, self.socket, str(self.out), "--pause", str(PROBE_PAUSE),
             "--status-every", str(STATUS_EVERY)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":  # its first answer came
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError("the socket probe did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            data = json.loads(self.out.read_text())
            self.probes, self.failures = data["probes"], data["failures"]
        except (OSError, ValueError, KeyError):
            if exc[0] is None:
                raise
        finally:
            self.out.unlink(missing_ok=True)


def _log_events(daemon: Daemon) -> list[dict[str, Any]]:
    path = daemon.dir / "qsupervisord.log"
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _at(event: dict[str, Any] | None) -> float | None:
    if event is None:
        return None
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def _pids(daemon: Daemon) -> tuple[int, int, list[int]]:
    status = daemon.status()
    prog = status["programs"]["bench"]
    return (int(status["master"]["pid"]), int(prog["leader_pid"]),
            sorted(int(w["pid"]) for w in prog["workers"] if w["pid"]))


def gaps(answers: Sequence[float], start: float, end: float,
         count: int = 5) -> list[tuple[float, float]]:
    """The `count` longest times between consecutive answers over [start, end], longest
    first: (seconds, its start)."""
    points = [t for t in answers if start <= t <= end]
    before = [t for t in answers if t < start]
    points.insert(0, before[-1] if before else start)
    return sorted(((b - a, a) for a, b in zip(points, points[1:])), reverse=True)[:count]


def gap_over(answers: Sequence[float], start: float, end: float) -> float | None:
    """The longest time between consecutive answers of those that overlap [start, end]
    (the exec to the new image's records rebuilt: the socket cannot answer in between,
    but replies flushed by the old image just before its exec may arrive after `start`)."""
    points = [t for t in answers if start <= t <= end]
    before = [t for t in answers if t < start]
    after = [t for t in answers if t > end]
    if not before or not after:
        return None
    points = [before[-1], *points, after[0]]
    return max(b - a for a, b in zip(points, points[1:]))


def schedstat(pid: int) -> tuple[float, float] | None:
    """Seconds the process's main thread has run, and waited runnable for a CPU
    (/proc/PID/schedstat; the thread and its counters go on across an exec)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run, wait = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    return int(run) / 1e9, int(wait) / 1e9


def machine_busy(window: float) -> float:
    """The share of the machine's CPU time (all cores) that was busy over `window` s."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total0, idle0 = read()
    time.sleep(window)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(limit: float = QUIET_LIMIT, timeout: float = 30.0) -> float:
    """Wait (up to `timeout`) until the machine is mostly idle, so that a run does not
    measure the tail of the one before (256 workers exiting, the broker closing their
    connections); return the busy share it started with."""
    deadline = time.monotonic() + timeout
    while True:
        busy = machine_busy(0.5)
        if busy <= limit or time.monotonic() > deadline:
            return busy


COMMANDS = {"reexec": ["reexec"], "reexec --all": ["reexec", "--all"],
            "reload --preload": ["reload", "--preload", "bench"]}


def reexec_once(daemon: Daemon, queue: str, workers: int, mode: str) -> dict[str, Any]:
    """One `mode` (a key of COMMANDS; `reload --preload` for comparison: what `--all` does
    after the exec, without one)."""
    master, leader, old = _pids(daemon)
    assert len(old) == workers and master == daemon.master_pid(), (master, old)
    seen_events = len(_log_events(daemon))
    busy = wait_quiet()
    with DepthSampler(queue, interval=SAMPLE_INTERVAL) as sampler, Probe(daemon.socket) as probe:
        time.sleep(BEFORE)
        # The log's wall-clock timestamps, placed on the monotonic clock of the samples.
        wall_offset = time.time() - time.monotonic()
        cpu_before = schedstat(master)
        launched = time.monotonic()
        proc = subprocess.run([QSUPERVISORCTL, "-s", daemon.socket, "--json", *COMMANDS[mode]],
                              capture_output=True, text=True, timeout=900)
        returned = time.monotonic()
        cpu_after = schedstat(master)
        time.sleep(BEFORE)
        ended = time.monotonic()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed ({proc.returncode}): {proc.stdout} {proc.stderr}")
    reply = json.loads(proc.stdout)
    answers = sorted(p[1] for p in probe.probes)
    longest = gaps(answers, launched, ended)
    floor = gaps(answers, launched - BEFORE, launched, 1)
    waits = [p[1] - p[0] for p in probe.probes if p[0] >= launched]
    consuming = [p[2] for p in probe.probes if p[2] is not None and p[0] >= launched]
    failures = [f for f in probe.failures if f[0] >= launched - BEFORE]

    events = _log_events(daemon)[seen_events:]

    def event(name: str) -> dict[str, Any] | None:
        return next((e for e in events if e.get("event") == name), None)

    requested, executing = _at(event("re-exec requested")), _at(event("re-executing"))
    done = event("qsupervisord re-executed")
    resumed = _at(done)
    rolled = _at(event("re-exec --all: every program runs the new code"))
    exec_at = executing - wall_offset if executing is not None else None
    resumed_at = resumed - wall_offset if resumed is not None else None

    daemon.wait_settled("bench", timeout=600)
    master_after, leader_after, new = _pids(daemon)
    if master_after != master:
        raise RuntimeError(f"the master's pid changed: {master} -> {master_after}")
    if mode == "reexec":
        if (leader_after, new) != (leader, old):
            raise RuntimeError(f"reexec changed the leader or workers: {leader} {old} -> "
                               f"{leader_after} {new}")
    elif set(new) & set(old) or len(new) != workers or leader_after == leader:
        raise RuntimeError(f"{mode} did not replace the leader and every worker: "
                           f"{leader} {old} -> {leader_after} {new}")
    exec_gap = (gap_over(answers, exec_at, resumed_at)
                if exec_at is not None and resumed_at is not None else None)
    cpu = ([after - before for before, after in zip(cpu_before, cpu_after)]
           if cpu_before and cpu_after else [None, None])
    return {
        "mode": mode,
        "machine_busy_before": round(busy, 3),
        "ctl_s": returned - launched,
        # The longest time without an answer over the whole window, and the one around
        # the exec (the same one for `reexec`; for `--all` the reloads follow).
        "gap_ms": longest[0][0] * 1000 if longest else None,
        "gap_at_ms": (longest[0][1] - launched) * 1000 if longest else None,
        "exec_gap_ms": exec_gap * 1000 if exec_gap is not None else None,
        "exec_at_ms": (exec_at - launched) * 1000 if exec_at is not None else None,
        "top_gaps": [[round(g * 1000, 1), round((a - launched) * 1000)] for g, a in longest],
        "floor_gap_ms": floor[0][0] * 1000 if floor else None,
        "longest_wait_ms": max(waits) * 1000 if waits else None,
        "answers": sum(1 for t in answers if launched <= t <= ended),
        "failures": len(failures),
        "failure_examples": [f[2] for f in failures[:3]],
        # When each failed request was sent and failed, relative to the exec (ms).
        "failure_times_ms": [[round((f[0] - exec_at) * 1000, 1), round((f[1] - exec_at) * 1000, 1)]
                             for f in failures[:3]] if exec_at is not None else [],
        "took_ms": reply.get("took_ms"),
        "logged_took_ms": done.get("took_ms") if done else None,
        "before_exec_ms": ((executing - requested) * 1000
                           if requested is not None and executing is not None else None),
        "rolling_s": rolled - resumed if rolled is not None and resumed is not None else None,
        # The master's CPU from the launch to the reply, and its time waiting for a CPU.
        "master_cpu_ms": cpu[0] * 1000 if cpu[0] is not None else None,
        "master_runq_ms": cpu[1] * 1000 if cpu[1] is not None else None,
        "min_consumers": sampler.min_consumers_since(launched),
        "max_consumers": max((c for t, _, c in sampler.samples if t >= launched), default=None),
        "consumer_samples": sum(1 for t, _, _ in sampler.samples if t >= launched),
        "min_status_consuming": min(consuming) if consuming else None,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key: str) -> list[float]:
        return [r[key] for r in runs if r.get(key) is not None]

    return {
        "runs": len(runs),
        "gap_ms": median(values("gap_ms")), "max_gap_ms": max(values("gap_ms"), default=None),
        "exec_gap_ms": median(values("exec_gap_ms")),
        "max_exec_gap_ms": max(values("exec_gap_ms"), default=None),
        "took_ms": median(values("took_ms")), "max_took_ms": max(values("took_ms"), default=None),
        "before_exec_ms": median(values("before_exec_ms")),
        "longest_wait_ms": max(values("longest_wait_ms"), default=None),
        "floor_gap_ms": max(values("floor_gap_ms"), default=None),
        "ctl_s": median(values("ctl_s")), "max_ctl_s": max(values("ctl_s"), default=None),
        "rolling_s": median(values("rolling_s")),
        "master_cpu_ms": median(values("master_cpu_ms")),
        "master_runq_ms": median(values("master_runq_ms")),
        "max_machine_busy_before": max(values("machine_busy_before"), default=None),
        "failures": sum(r["failures"] for r in runs),
        "min_consumers": min(values("min_consumers"), default=None),
        "max_consumers": max(values("max_consumers"), default=None),
        "min_status_consuming": min(values("min_status_consuming"), default=None),
    }


def measure(settings: Settings, workers: int, repeats: int) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue(f"reexec{workers}", "quorum")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        with Daemon({"bench": program(queue, "bench_handlers:noop", workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=600)
            time.sleep(1.0)
            for mode in MODES:
                for _ in range(repeats):
                    r = reexec_once(daemon, queue, workers, mode)
                    runs[mode].append(r)
                    settings.say(
                        f"{mode} N={workers}: socket gap {r['gap_ms']:.0f} ms at "
                        f"{r['gap_at_ms']:.0f} (around the exec {r['exec_gap_ms'] or 0:.0f}; "
                        f"floor {r['floor_gap_ms']:.1f}), took_ms {r['took_ms']}, before the exec "
                        f"{r['before_exec_ms'] or 0:.0f} ms, ctl {r['ctl_s']:.2f} s, consumers "
                        f"min {r['min_consumers']} max {r['max_consumers']} of {workers}, "
                        f"failures {r['failures']}, master CPU {r['master_cpu_ms'] or 0:.0f} ms "
                        f"(waited {r['master_runq_ms'] or 0:.0f} ms for one)")
                    time.sleep(1.0)
    finally:
        broker.close()
    return {"workers": workers, "runs": runs,
            "summary": {mode: _summary(runs[mode]) for mode in MODES}}


def run(settings: Settings, sizes: Sequence[int] = (8, 256),
        repeats: int | None = None) -> dict[str, Any]:
    if repeats is None:
        repeats = 1 if settings.quick else max(5, settings.repeats)
    if settings.quick:
        sizes = tuple(min(s, 16) for s in sizes)
    return {"sizes": [measure(settings, workers, repeats) for workers in sizes],
            "target_gap_ms": TARGET_GAP_MS, "probe_pause_ms": PROBE_PAUSE * 1000,
            "sample_interval_ms": SAMPLE_INTERVAL * 1000}
