"""Command programs: one job = one fork and exec. qsupervisor with one worker of a program
that names `command:` against the bare loop any Python programmer would write — a plain
pika consumer that runs the same command with `subprocess.run(argv, input=body)` and acks
(bench/apps/command_consumer.py) — draining the same pre-filled backlog with the same
prefetch, in the same run, alternating which goes first, repeated. Beside them, the same
`subprocess.run` loop with no broker at all, so the broker's share shows.

Cases: `/bin/true` (nothing but the fork, exec and exit: what is left is the cost per job
of whoever runs it) and a minimal PHP job (`php bench/apps/php_job.php`: reads the body
from stdin, json_decode, exit 0).

Rate: as in the throughput part, the messages consumed between the queue depth falling to
90 % and to 10 % of the backlog (passive declares every 20 ms on another connection),
divided by that time; start-up never counts.
"""

from __future__ import annotations

import functools
import json
import shutil
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
    median,
    pair_ratios,
    ratio,
    retrying,
)
from .daemon import Daemon
from .throughput import _rate, _watch

PREFETCH = 10
QUEUE_TYPE = "quorum"  # qsupervisor's default
SAMPLE_INTERVAL = 0.02
SCRIPT = str(APPS_DIR / "command_consumer.py")
PHP_JOB = str(APPS_DIR / "php_job.php")
SIDES = ("bare", "qsupervisor")
TARGET = 0.9
# Jobs per sample: a few seconds of work at this machine's rate (about 1,000/s for
# /bin/true, 60/s for PHP), tiny with --quick.
BACKLOG = {"true": 6_000, "php": 400}
QUICK_BACKLOG = {"true": 200, "php": 20}


def argv_of(case: str) -> list[str]:
    if case == "true":
        return ["/bin/true"]
    php = shutil.which("php")
    if php is None:
        raise RuntimeError("php is not installed")
    return [php, PHP_JOB]


def available_cases(cases: Sequence[str]) -> list[str]:
    return [c for c in cases if c != "php" or shutil.which("php")]


class BareLoop:
    """bench/apps/command_consumer.py consuming `queue`: the bare subprocess loop."""

    def __init__(self, queue: str, argv: list[str], prefetch: int) -> None:
        self.argv = [sys.executable, SCRIPT, "--queue", queue, "--prefetch", str(prefetch),
                     "--broker", BROKER_URL, "--", *argv]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> BareLoop:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        return self

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the bare command consumer exited with {self.proc.returncode}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def drain_once(broker: Broker, side: str, case: str, count: int) -> dict[str, Any]:
    argv = argv_of(case)
    queue = broker.new_queue(f"cmd-{case}-{side[0]}", QUEUE_TYPE)
    try:
        fill_seconds = broker.fill(queue, count)
        with DepthSampler(queue, interval=SAMPLE_INTERVAL) as sampler:
            launched = time.monotonic()
            if side == "bare":
                with BareLoop(queue, argv, PREFETCH) as bare:
                    measured = _watch(sampler, 1, count, lambda: bare.pids, bare.check)
            else:
                prog = {"command": argv, "queue": queue, "workers": 1, "prefetch": PREFETCH,
                        "queue_type": QUEUE_TYPE, "stop_timeout": "10s"}
                with Daemon({"bench": prog}).start() as daemon:
                    measured = _watch(sampler, 1, count, lambda: daemon.worker_pids("bench"),
                                      daemon._check_alive)
        samples = list(sampler.samples)
    finally:
        broker.delete(queue)
        broker.queues.remove(queue)
    return _rate(samples, launched, 1, count, fill_seconds, measured)


def no_broker_once(case: str, count: int) -> dict[str, Any]:
    """The same subprocess.run loop, `count` times, no broker: in a process of its own."""
    out = subprocess.run([sys.executable, SCRIPT, "--no-broker", str(count), "--", *argv_of(case)],
                         capture_output=True, text=True, check=True, timeout=600)
    timed = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rate": timed["jobs"] / timed["seconds"], "seconds": timed["seconds"]}


def run(settings: Settings, cases: Sequence[str] = ("true", "php")) -> dict[str, Any]:
    cases = available_cases(cases)
    backlogs = QUICK_BACKLOG if settings.quick else BACKLOG
    runs: list[dict[str, Any]] = []
    broker = Broker()
    try:
        for repeat in range(settings.repeats):
            for case in cases:
                count = backlogs[case]
                order = SIDES if repeat % 2 == 0 else tuple(reversed(SIDES))
                # The broker-less loop goes between the two sides, so it sees the same load.
                for side in (order[0], "no broker", order[1]):
                    if side == "no broker":
                        result = no_broker_once(case, count)
                    else:
                        result = retrying(f"commands {case} {side}",
                                          functools.partial(drain_once, broker, side, case, count),
                                          settings)
                    result.update(side=side, case=case, repeat=repeat, backlog=count)
                    runs.append(result)
                    settings.say(f"commands {case} {side}: {result['rate']:,.1f} jobs/s "
                                 f"{result.get('note', '')}")
    finally:
        broker.close()
    return {"prefetch": PREFETCH, "queue_type": QUEUE_TYPE, "repeats": settings.repeats,
            "argv": {case: argv_of(case) for case in cases}, "target": TARGET,
            "runs": runs, "summary": summarize(runs)}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for case in ("true", "php"):
        mine = [r for r in runs if r["case"] == case]
        if not mine:
            continue
        row: dict[str, Any] = {"case": case, "backlog": mine[0]["backlog"]}
        for side in (*SIDES, "no broker"):
            ours = [r for r in mine if r["side"] == side]
            rates = [r["rate"] for r in ours]
            row[side] = {"median": median(rates), "all": [round(x, 1) for x in rates],
                         "min": min(rates) if rates else None,
                         "max": max(rates) if rates else None,
                         "consumer_cpu_us_per_job": median(
                             [r["consumer_cpu_us_per_msg"] for r in ours
                              if r.get("consumer_cpu_us_per_msg") is not None])}
        row["ratio"] = ratio(row["qsupervisor"]["median"], row["bare"]["median"])
        row["bare_vs_no_broker"] = ratio(row["bare"]["median"], row["no broker"]["median"])
        row["pair_ratios"] = pair_ratios(mine, lambda r: r["side"], "qsupervisor", "bare")
        rows.append(row)
    return rows
