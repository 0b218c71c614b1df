"""The Prometheus endpoint of the real daemon, read with prometheus_client's text parser:
the families and their types, queue readings from the broker, and counters that never go
backwards through recycling, reload, reload --preload, scale and update."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .daemon import Daemon, MakeDaemon
from .harness import QSUPERVISORD, QUICK_BACKOFF, Ledger, program, runtime_program, wait_for
from .rabbit import Broker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str = "/metrics", method: str = "GET",
        host: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read().decode()
    finally:
        conn.close()


class Scraper:
    def __init__(self, port: int) -> None:
        self.port = port

    def families(self) -> dict[str, Any]:
        status, headers, text = get(self.port)
        assert status == 200, text
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self) -> Samples:
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in self.families().values() for s in family.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, frozenset(labels.items())))


def start(daemons: MakeDaemon, programs: dict[str, Any]) -> tuple[Daemon, Scraper]:
    port = free_port()
    daemon = daemons(programs, metrics={"listen": f"127.0.0.1:{port}"})
    daemon.start()
    return daemon, Scraper(port)


def jobs(samples: Samples, name: str, outcome: str = "done") -> float:
    return samples[("qsupervisor_jobs_total",
                    frozenset({("program", name), ("outcome", outcome)}))]


@contextmanager
def watching_counters(scraper: Scraper) -> Iterator[list[Samples]]:
    """Scrape every 50 ms in the background; every counter must be at least what it was in
    the scrape before (a histogram's buckets, sum and count too)."""
    scrapes: list[Samples] = []
    stop = threading.Event()
    failures: list[str] = []

    def run() -> None:
        previous: Samples = {}
        while not stop.is_set():
            try:
                samples = scraper.samples()
            except Exception as exc:  # reported below, not lost in the thread
                failures.append(repr(exc))
                return
            for key, value in samples.items():
                name = key[0]
                monotonic = (name.endswith(("_total", "_bucket", "_sum", "_count"))
                             and not name.startswith("process_"))
                if monotonic and key in previous and value < previous[key]:
                    failures.append(f"{name}{dict(key[1])} went from {previous[key]} to {value}")
            previous = samples
            scrapes.append(samples)
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield scrapes
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures[:10]


def test_a_thousand_jobs_through_recycling_and_a_reload_count_exactly_a_thousand(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("metrics-recycle")
    daemon, scraper = start(daemons, {"recycle": program(queue, ledger, workers=3,
                                                         max_jobs=50)})
    with watching_counters(scraper) as scrapes:
        ids = broker.publish_many(queue, 500)
        ledger.wait_for_ids(ids, timeout=120)
        assert daemon.ctl("reload", "recycle").returncode == 0
        ids += broker.publish_many(queue, 500)
        ledger.wait_for_ids(ids, timeout=120)
        wait_for(lambda: jobs(scraper.samples(), "recycle") == 1000,
                 what="qsupervisor_jobs_total{outcome=done} to reach 1000")
    samples = scraper.samples()
    assert jobs(samples, "recycle") == 1000
    assert jobs(samples, "recycle", "failed") == 0
    assert len(scrapes) > 10
    count = samples[("qsupervisor_job_duration_seconds_count",
                     frozenset({("program", "recycle")}))]
    assert count == 1000
    exits = {dict(labels)["reason"]: value for (name, labels), value in samples.items()
             if name == "qsupervisor_worker_exits_total"}
    assert exits["max_jobs"] >= 1000 // 50 - 3 and exits["reload"] >= 1, exits
    assert exits["crashed"] == 0 and exits["killed"] == 0, exits


def test_families_types_labels_and_queue_readings(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue, idle_queue = broker.declare("metrics-busy"), broker.declare("metrics-idle")
    slow_queue = broker.declare("metrics-slow")
    daemon, scraper = start(daemons, {
        "busy": program(queue, ledger, workers=2, attempts=2, backoff=dict(QUICK_BACKOFF)),
        "idle": program(idle_queue, ledger, workers=0),
        "slow": runtime_program(slow_queue, ledger, timeout="1s", attempts=1)})
    broker.publish_many(idle_queue, 7)
    broker.publish(slow_queue, {"hang": True})
    ok = broker.publish_many(queue, 5)
    broker.publish(queue, {"fail": "always"})
    broker.publish_raw(queue, b"not json")
    ledger.wait_for_ids(ok)

    def settled() -> bool:
        samples = scraper.samples()
        return (jobs(samples, "busy", "dead_lettered") == 2
                and samples.get(("qsupervisor_queue_messages",
                                 frozenset({("program", "idle"), ("state", "ready")}))) == 7
                and samples.get(("qsupervisor_dead_letter_messages",
                                 frozenset({("program", "busy")}))) == 2)

    wait_for(lambda: jobs(scraper.samples(), "slow", "timed_out") == 1,
             what="the hung job to time out")
    wait_for(settled, what=lambda: "the retries, dead letters and queue readings: "
             + str({k: v for k, v in scraper.samples().items()
                    if k[0].startswith(("qsupervisor_jobs", "qsupervisor_queue", "qsupervisor_dead"))}))
    families = scraper.families()
    types = {name: family.type for name, family in families.items()}
    assert types == {
        "qsupervisor_jobs": "counter", "qsupervisor_job_duration_seconds": "histogram",
        "qsupervisor_workers": "gauge", "qsupervisor_workers_desired": "gauge",
        "qsupervisor_consumers": "gauge", "qsupervisor_workers_busy": "gauge",
        "qsupervisor_job_oldest_running_seconds": "gauge",
        "qsupervisor_worker_memory_bytes": "gauge", "qsupervisor_worker_exits": "counter",
        "qsupervisor_program_state": "gauge", "qsupervisor_preload_stale": "gauge",
        "qsupervisor_queue_messages": "gauge", "qsupervisor_dead_letter_messages": "gauge",
        "qsupervisor_queue_consumers": "gauge", "qsupervisor_build_info": "gauge",
        "process_start_time_seconds": "gauge", "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge", "process_open_fds": "gauge",
        "process_max_fds": "gauge"}
    samples = scraper.samples()
    outcomes = {o: jobs(samples, "busy", o)
                for o in ("done", "failed", "retried", "dead_lettered", "timed_out")}
    # 5 done; the failing one tried twice (retried once, then dead-lettered), the
    # undecodable one dead-lettered at once.
    assert outcomes == {"done": 5, "failed": 3, "retried": 1, "dead_lettered": 2,
                        "timed_out": 0}

    def one(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert one("qsupervisor_workers", program="busy", state="RUNNING") == 2
    assert one("qsupervisor_workers", program="busy", state="FATAL") == 0
    assert one("qsupervisor_workers_desired", program="idle") == 0
    assert one("qsupervisor_consumers", program="busy") == 2
    assert one("qsupervisor_consumers", program="idle") == 0
    assert one("qsupervisor_queue_consumers", program="busy") == 2
    assert one("qsupervisor_queue_messages", program="idle", state="unacked") == 0
    assert one("qsupervisor_queue_messages", program="busy", state="ready") == 0
    assert one("qsupervisor_dead_letter_messages", program="idle") == 0
    assert one("qsupervisor_program_state", program="busy", state="RUNNING") == 1
    assert one("qsupervisor_program_state", program="busy", state="FATAL") == 0
    assert one("qsupervisor_preload_stale", program="busy") == 0
    assert one("qsupervisor_worker_memory_bytes", program="busy") > 10 * 1024 * 1024
    assert one("qsupervisor_worker_memory_bytes", program="idle") == 0
    assert one("qsupervisor_job_duration_seconds_count", program="busy") == 8  # every run
    import qsupervisor
    assert one("qsupervisor_build_info", version=qsupervisor.__version__) == 1
    started = one("process_start_time_seconds")
    assert time.time() - 120 < started <= time.time()
    assert one("process_open_fds") > 0


def test_http_errors(daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon, scraper = start(daemons, {"p": program(broker.declare("metrics-http"), ledger)})
    assert get(scraper.port, "/")[0] == 404
    assert get(scraper.port, "/metrics/x")[0] == 404
    status, headers, _ = get(scraper.port, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = get(scraper.port, method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 100
    assert get(scraper.port, "/metrics?x=1")[0] == 200
    assert daemon.ctl("status").returncode == 0  # the master is fine


def test_counters_survive_reload_preload_scale_and_update(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("metrics-keep")
    programs = {"keep": program(queue, ledger, workers=2)}
    daemon, scraper = start(daemons, programs)
    sent: list[str] = []

    def run_jobs(count: int) -> None:
        sent.extend(broker.publish_many(queue, count))
        ledger.wait_for_ids(sent)
        wait_for(lambda: jobs(scraper.samples(), "keep") == len(sent),
                 what=f"jobs_total to reach {len(sent)}")

    with watching_counters(scraper):
        run_jobs(20)
        assert daemon.ctl("reload", "keep", "--preload").returncode == 0
        run_jobs(20)
        assert daemon.ctl("scale", "keep", "4").returncode == 0
        run_jobs(20)
        assert daemon.ctl("scale", "keep", "1").returncode == 0
        run_jobs(20)
        programs["keep"]["max_jobs"] = 7  # a changed program: a new leader, new workers
        daemon.write(programs)
        assert daemon.ctl("update").returncode == 0
        daemon.wait_running()
        run_jobs(20)
        # Removed, then added back: the name's counters go on from where they were.
        daemon.write({})
        assert daemon.ctl("update").returncode == 0
        wait_for(lambda: "keep" not in daemon.status()["programs"], what="keep removed")
        daemon.write(programs)
        assert daemon.ctl("update").returncode == 0
        daemon.wait_running()
        run_jobs(20)
    samples = scraper.samples()
    assert jobs(samples, "keep") == 120
    exits = {dict(labels)["reason"]: value for (name, labels), value in samples.items()
             if name == "qsupervisor_worker_exits_total"}
    assert exits["reload"] >= 2 and exits["scale"] == 3 and exits["max_jobs"] >= 1, exits


def test_off_by_default_nothing_listens(daemons: MakeDaemon, broker: Broker,
                                        ledger: Ledger) -> None:
    daemon = daemons({"p": program(broker.declare("metrics-off"), ledger)})
    daemon.start()
    assert _listening_sockets(daemon.master_pid()) == set()


def test_a_port_in_use_stops_the_start_with_a_message(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemons({"p": program(broker.declare("metrics-taken"), ledger)},
                         metrics={"listen": f"127.0.0.1:{port}"})
        import subprocess
        done = subprocess.run([QSUPERVISORD, "-c", str(daemon.config_path), "-n"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert not daemon.socket.exists()


def _listening_sockets(pid: int) -> set[int]:
    """Inodes of the TCP sockets the process holds that listen (state 0A)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    listening.add(int(fields[9]))
    return held & listening
