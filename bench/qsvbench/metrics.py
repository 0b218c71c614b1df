"""The Prometheus endpoint's cost.

Scrape: the HTTP round trip of GET /metrics (a new connection each time, as the endpoint
closes after each reply) against a daemon with 256 idle no-op workers, repeated.

Throughput: the throughput part's drain (a pre-filled backlog, the steady-state window
between 90 % and 10 % of it) with the endpoint off and on, interleaved, in the same run;
while it is on, a scraper asks every second (Prometheus's usual interval is 15 s).

Endpoint CPU: what the daemon's own processes (master, leader, herald) spend per second
with the endpoint off, and on with a scrape every second, on idle workers: the cost of a
scrape, apart from any noise in a drain's rate. The workers record each job's duration whether the endpoint is on or off, so the per-job
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

from .common import (
    Broker,
    DepthSampler,
    Settings,
    children,
    cpu_seconds_precise,
    median,
    pair_ratios,
    percentile,
)
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


def drain(broker: Broker, metrics: bool, workers: int, count: int, job: str) -> dict[str, Any]:
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
            prog = program(queue, f"bench_handlers:{job}", workers, prefetch=PREFETCH,
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


def endpoint_cpu(workers: int, seconds: float, repeats: int) -> dict[str, Any]:
    """ms of CPU per second in the master and in its other children (leader, herald) over
    `seconds` of idle workers, off and on (scraped every second), alternating."""
    broker = Broker()
    queue = broker.new_queue("metrics-cpu", "classic")
    runs: list[dict[str, Any]] = []
    try:
        for repeat in range(repeats):
            for metrics in (False, True):
                port = free_port()
                settings = {"metrics": {"listen": f"127.0.0.1:{port}"}} if metrics else {}
                prog = program(queue, "bench_handlers:noop", workers, queue_type="classic")
                with Daemon({"bench": prog}, **settings).start() as daemon:
                    daemon.wait_settled("bench", timeout=120)
                    time.sleep(2)  # past the start-up's own work
                    master = daemon.proc.pid if daemon.proc else 0
                    pids = [master] + children(master)
                    before = {pid: cpu_seconds_precise(pid) or 0.0 for pid in pids}
                    started, scrapes = time.monotonic(), 0
                    while time.monotonic() - started < seconds:
                        if metrics:
                            scrape(port)
                            scrapes += 1
                        time.sleep(1.0)
                    span = time.monotonic() - started
                    used = {pid: (cpu_seconds_precise(pid) or 0.0) - before[pid] for pid in pids}
                runs.append({"metrics": metrics, "repeat": repeat, "scrapes": scrapes,
                             "master_ms_per_s": used[master] / span * 1000,
                             "others_ms_per_s": sum(v for p, v in used.items() if p != master)
                             / span * 1000})
    finally:
        broker.delete(queue)
        broker.queues.remove(queue)
        broker.close()

    def total(on: bool) -> float:
        return median([r["master_ms_per_s"] + r["others_ms_per_s"] for r in runs
                       if r["metrics"] is on])

    extra = total(True) - total(False)  # ms of CPU per second at one scrape a second
    cores = os.cpu_count() or 1
    return {"runs": runs, "workers": workers, "seconds": seconds, "off_ms_per_s": total(False),
            "on_ms_per_s": total(True), "per_scrape_ms": extra,
            "machine_share": extra / (cores * 1000)}


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


# The drain's job: 2 ms of computation on as many workers as cores. The workers then use
# the whole machine (the broker needs little at ~1,000 msg/s), so whatever the endpoint
# costs comes out of their throughput, and the rate, bound by CPU alone, is steady between
# runs. Tried first: a no-op job on 4 workers, and 1 ms of sleep on 8; their rates, bound by
# the broker and the scheduling between it and the workers, varied by ±10-15 % between
# repeats (8,859 to 11,865 and 3,718 to 4,991 msg/s), too much to resolve 2 %.
DRAIN_JOB = "compute_2ms"


def run(settings: Settings, workers: int = 256,
        drain_workers: int = os.cpu_count() or 2) -> dict[str, Any]:
    quick = settings.quick
    result: dict[str, Any] = {
        "scrape": scrape_latency(16 if quick else workers, 10 if quick else 100),
        "job_write": job_write_cost(20_000 if quick else 200_000),
        "endpoint_cpu": endpoint_cpu(drain_workers, 5 if quick else 20, 1 if quick else 2),
        "drains": [],
    }
    s = result["scrape"]
    settings.say(f"metrics: scrape at {s['workers']} workers {s['median_ms']:.2f} ms "
                 f"(p90 {s['p90_ms']:.2f}, max {s['max_ms']:.2f}), {s['bytes']:,} bytes")
    count = 1_000 if quick else 20_000  # about 20 s of draining: a run averages over noise
    broker = Broker()
    try:
        for repeat in range(settings.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for metrics in order:
                run_ = drain(broker, metrics, drain_workers, count, DRAIN_JOB)
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
    # Each repeat's on ÷ off: the spread says how far the median can be trusted.
    result["pair_ratios"] = pair_ratios(result["drains"], lambda r: r["metrics"], True, False)
    result["drain_workers"], result["backlog"], result["job"] = drain_workers, count, DRAIN_JOB
    return result
