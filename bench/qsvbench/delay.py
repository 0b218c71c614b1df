"""Delay lateness: publish a spread of delayed messages together (log-spaced from 0.1 s to
60 s; --quick up to 3 s) with qsupervisor.Publisher through the program's delay chain
(default resolution 0.1 s), and record when the handler ran. Lateness = the handler's
start (time.time() in the worker) − the message's x-qsupervisor-due-at (publish time +
delay, set by the publisher). A run takes at least the longest delay."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from qsupervisor import Publisher
from qsupervisor.config.model import DelayConfig

from .common import BROKER_URL, Broker, Settings, median, percentile, wait_until
from .daemon import Daemon, program

RESOLUTION = 0.1  # the daemon's default delay.resolution


def delays(count: int, shortest: float, longest: float) -> list[float]:
    step = (math.log(longest) - math.log(shortest)) / max(1, count - 1)
    return [round(math.exp(math.log(shortest) + i * step), 3) for i in range(count)]


def run(settings: Settings, count: int | None = None,
        longest: float | None = None) -> dict[str, Any]:
    count = count or (30 if settings.quick else 200)
    longest = longest or (3.0 if settings.quick else 60.0)
    wanted = delays(count, 0.1, longest)
    broker = Broker()
    queue = broker.new_queue("delay", "quorum")
    ledger = Path(tempfile.mkdtemp(prefix="qsv-bench-delay-")) / "ledger.jsonl"
    try:
        prog = program(queue, "bench_handlers:record_arrival", 4, prefetch=10,
                       environment={"BENCH_LEDGER": str(ledger)})
        with Daemon({"bench": prog}).start() as daemon:
            daemon.wait_settled("bench")
            published_at = time.time()
            with Publisher(BROKER_URL, delay=DelayConfig(resolution=RESOLUTION)) as publisher:
                for i, delay in enumerate(wanted):
                    publisher.publish(queue, {"id": i, "delay": delay}, delay=delay)
            publish_s = time.time() - published_at

            def entries() -> list[dict[str, Any]]:
                if not ledger.exists():
                    return []
                return [json.loads(line) for line in ledger.read_text().splitlines()
                        if line.endswith("}")]

            wait_until(lambda: len({e["id"] for e in entries()}) >= count, longest + 60,
                       f"{count} delayed jobs", interval=0.2)
            done = entries()
    finally:
        broker.close()
        ledger.unlink(missing_ok=True)
        ledger.parent.rmdir()
    lateness = [e["ran"] - e["due_ms"] / 1000.0 for e in done]
    by_range = {}
    for label, low, high in (("0.1-1 s", 0, 1.0), ("1-10 s", 1.0, 10.0), ("10-60 s", 10.0, 61.0)):
        part = [e["ran"] - e["due_ms"] / 1000.0 for e in done if low <= e["delay"] < high]
        if part:
            by_range[label] = {"count": len(part), "p50_ms": percentile(part, 50) * 1000,
                               "p99_ms": percentile(part, 99) * 1000,
                               "max_ms": max(part) * 1000}
    from qsupervisor.worker import jobs  # what the workers of this run used
    summary = {
        "early_tolerance_ms": jobs.EARLY_TOLERANCE * 1000,
        "messages": count, "longest_delay_s": longest, "resolution_s": RESOLUTION,
        "publish_s": publish_s, "runs": len(done), "duplicates": len(done) - count,
        "p50_ms": percentile(lateness, 50) * 1000, "p99_ms": percentile(lateness, 99) * 1000,
        "max_ms": max(lateness) * 1000, "min_ms": min(lateness) * 1000,
        "median_ms": (median(lateness) or 0) * 1000, "by_range": by_range,
    }
    settings.say(f"delay: p50 {summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms, "
                 f"max {summary['max_ms']:.0f} ms over {count} messages")
    return {"summary": summary}
