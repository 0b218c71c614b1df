"""The Prometheus endpoint's cost.

Scrape: the HTTP round trip of GET /metrics (a new connection each time, as the endpoint
closes after each reply) against a daemon with 256 idle no-op workers, repeated.

Throughput: the throughput part's drain (a pre-filled backlog, the steady-state window
between 90 % and 10 % of it) with the endpoint off and on, interleaved, in the same run;
while it is on, a scraper asks every second (Prometheus's usual interval is 15 s). The
workers record each job's duration whether the endpoint is on or off, so the per-job
cost of the histogram is measured apart, by timing Stats.job_started + job_finished
with and without the histogram's write in this process.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from typing import Any

from qsupervisor import stats_segment
from qsupervisor.stats_segment import DONE, Stats

from .common import Broker, DepthSampler, Settings, median, percentile
from .daemon import Daemon, program
from .throughput import PREFETCH, _rate, _watch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"GET /metrics answered {reply.status}")
        return body
    finally:
        conn.close()


def scrape_latency(workers: int, runs: int) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue(f"metrics{workers}", "quorum")
    port = free_port()
    try:
        with Daemon({"bench": program(queue, "bench_handlers:noop", workers)},
                    metrics={"listen": f"127.0.0.1:{port}"}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            body = scrape(port)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                scrape(port)
                times.append((time.perf_counter() - started) * 1000)
            return {"workers": workers, "median_ms": median(times),
                    "p90_ms": percentile(times, 90), "max_ms": max(times), "runs": runs,
                    "bytes": len(body), "lines": body.count(b"\n")}
    finally:
        broker.close()


def drain(broker: Broker, metrics: bool, workers: int, count: int) -> dict[str, Any]:
    queue = broker.new_queue(f"mtp-{'on' if metrics else 'off'}", "classic")
    port = free_port()
    settings = {"metrics": {"listen": f"127.0.0.1:{port}"}} if metrics else {}
    stop = threading.Event()
    scrapes: list[float] = []

    def scraper() -> None:
        while not stop.wait(1.0):
            try:
                started = time.perf_counter()
                scrape(port)
                scrapes.append((time.perf_counter() - started) * 1000)
            except OSError:
                pass  # not listening yet

    try:
        fill_seconds = broker.fill(queue, count)
        with DepthSampler(queue, interval=0.01) as sampler:
            launched = time.monotonic()
            prog = program(queue, "bench_handlers:noop", workers, prefetch=PREFETCH,
                           queue_type="classic")
            with Daemon({"bench": prog}, **settings).start() as daemon:
                thread = threading.Thread(target=scraper, daemon=True)
                if metrics:
                    thread.start()
                try:
                    measured = _watch(sampler, workers, count,
                                      lambda: daemon.worker_pids("bench"), daemon._check_alive)
                finally:
                    stop.set()
                    if metrics:
                        thread.join(15)
        samples = list(sampler.samples)
    finally:
        broker.delete(queue)
        broker.queues.remove(queue)
    result = _rate(samples, launched, workers, count, fill_seconds, measured)
    result["scrapes"] = len(scrapes)
    result["scrape_median_ms"] = median(scrapes) if scrapes else None
    return result


def job_write_cost(runs: int = 200_000) -> dict[str, Any]:
    """ns per job for the segment's writes (job_started + job_finished), with the duration
    histogram and without it (its write replaced by nothing), in this process."""
    fd = stats_segment.create()
    stats = Stats(fd)
    os.close(fd)

    def per_job() -> float:
        started = time.perf_counter()
        for _ in range(runs):
            stats.job_started("0123456789abcdef")
            stats.job_finished(DONE)
        return (time.perf_counter() - started) / runs * 1e9

    with_histogram = min(per_job() for _ in range(3))
    observe = Stats._observe
    Stats._observe = lambda self, seconds, timed_out: None  # type: ignore[method-assign]
    try:
        without = min(per_job() for _ in range(3))
    finally:
        Stats._observe = observe  # type: ignore[method-assign]
    stats.close()
    return {"with_ns": with_histogram, "without_ns": without,
            "histogram_ns": with_histogram - without}


def run(settings: Settings, workers: int = 256, drain_workers: int = 4) -> dict[str, Any]:
    quick = settings.quick
    result: dict[str, Any] = {
        "scrape": scrape_latency(16 if quick else workers, 10 if quick else 100),
        "job_write": job_write_cost(20_000 if quick else 200_000),
        "drains": [],
    }
    s = result["scrape"]
    settings.say(f"metrics: scrape at {s['workers']} workers {s['median_ms']:.2f} ms "
                 f"(p90 {s['p90_ms']:.2f}, max {s['max_ms']:.2f}), {s['bytes']:,} bytes")
    count = 3_000 if quick else 40_000
    broker = Broker()
    try:
        for repeat in range(settings.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for metrics in order:
                run_ = drain(broker, metrics, drain_workers, count)
                run_["metrics"] = metrics
                run_["repeat"] = repeat
                result["drains"].append(run_)
                settings.say(f"metrics {'on ' if metrics else 'off'} repeat {repeat}: "
                             f"{run_['rate']:,.0f} msg/s")
    finally:
        broker.close()
    off = median([r["rate"] for r in result["drains"] if not r["metrics"]])
    on = median([r["rate"] for r in result["drains"] if r["metrics"]])
    result["rate_off"], result["rate_on"] = off, on
    result["on_vs_off"] = on / off if off and on else None
    result["drain_workers"], result["backlog"] = drain_workers, count
    return result
