"""Handlers the benchmarks run, in qsupervisor workers and in the plain pika consumers
alike (bench/apps is on both sides' sys.path)."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def noop(payload: Any) -> None:
    """The job that costs nothing: what is left is the consumer's own cost per message."""


def sleep_1ms(payload: Any) -> None:
    time.sleep(0.001)


def sleep_10ms(payload: Any) -> None:
    time.sleep(0.010)


def compute_2ms(payload: Any) -> None:
    """2 ms of CPU (process time, so a preempted worker still computes its full share): on
    as many workers as cores, the workers use the whole machine, and any CPU another
    process takes comes out of their throughput. The metrics benchmark's job."""
    end = time.process_time() + 0.002
    while time.process_time() < end:
        pass


JOBS = {"noop": noop, "1ms": sleep_1ms, "10ms": sleep_10ms}


def record_arrival(payload: Any) -> None:
    """Appends when the job ran and when it was due (the x-qsupervisor-due-at header the
    publisher set, in ms) to $BENCH_LEDGER: one JSON line, one write(2) with O_APPEND, for
    the delay lateness benchmark."""
    import qsupervisor

    job = qsupervisor.current_job()
    due = job.headers.get("x-qsupervisor-due-at") if job is not None else None
    line = json.dumps({"id": payload.get("id"), "delay": payload.get("delay"),
                       "due_ms": int(due) if due is not None else None,
                       "ran": time.time()}) + "\n"
    fd = os.open(os.environ["BENCH_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def sleep_100ms(payload: Any) -> None:
    """The autoscaling benchmark's job: long enough that workers, not the broker, limit."""
    time.sleep(0.100)
