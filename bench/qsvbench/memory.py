"""Memory: total PSS of a program's worker tree (its leader + N workers, forked after the
leader imported a heavy `preload` list) against N separate plain pika consumer processes
that import the same modules and open their consumer. Both sides are idle consumers on
their own empty queue, measured after they settle; alternated, repeated.

PSS (proportional set size, /proc/PID/smaps_rollup) divides every shared page among the
processes that map it, so the PSS of a set of processes adds up to the memory they really
cost together; RSS would count each shared page once per process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .common import Broker, Settings, median, pss_kib, ratio, rss_kib, wait_until
from .daemon import Daemon, program
from .plain import PlainConsumers

PRELOAD = ["pika", "yaml", "structlog", "json", "email", "email.mime.text", "http.client",
           "decimal", "xml.etree.ElementTree", "asyncio", "sqlite3", "bench_ballast"]
SETTLE = 1.0  # seconds after every consumer is attached, so start-up garbage is collected


def measure_qsupervisor(broker: Broker, workers: int) -> dict[str, Any]:
    queue = broker.new_queue("mem-q", "quorum")
    prog = program(queue, "bench_handlers:noop", workers, prefetch=10, preload=PRELOAD)
    with Daemon({"bench": prog}).start() as daemon:
        daemon.wait_settled("bench")
        wait_until(lambda: broker.depth(queue)[1] == workers, 60, "consumers attached")
        time.sleep(SETTLE)
        leader = daemon.leader_pid("bench")
        pids = daemon.worker_pids("bench")
        master = daemon.master_pid()
        worker_pss = [pss_kib(p) or 0 for p in pids]
        return {"leader_kib": pss_kib(leader) or 0, "workers_kib": worker_pss,
                "master_kib": pss_kib(master) or 0,
                "tree_kib": (pss_kib(leader) or 0) + sum(worker_pss),
                "worker_rss_kib": median([rss_kib(p) or 0 for p in pids])}


def measure_plain(broker: Broker, workers: int) -> dict[str, Any]:
    queue = broker.new_queue("mem-p", "quorum")
    with PlainConsumers(queue, workers, 10, "noop", preload=PRELOAD) as consumers:
        wait_until(lambda: (consumers.check(), broker.depth(queue)[1] == workers)[1], 60,
                   "consumers attached")
        time.sleep(SETTLE)
        pss = [pss_kib(p) or 0 for p in consumers.pids]
        return {"processes_kib": pss, "tree_kib": sum(pss),
                "process_rss_kib": median([rss_kib(p) or 0 for p in consumers.pids])}


def run(settings: Settings, workers: int = 8) -> dict[str, Any]:
    """Leader + `workers` against `workers` separate processes; medians of the repeats."""
    runs: list[dict[str, Any]] = []
    broker = Broker()
    try:
        for repeat in range(settings.repeats):
            order: Sequence[str] = (("plain", "qsupervisor") if repeat % 2 == 0
                                    else ("qsupervisor", "plain"))
            for side in order:
                result = (measure_plain if side == "plain" else measure_qsupervisor)(broker, workers)
                result.update(side=side, repeat=repeat)
                runs.append(result)
                settings.say(f"memory {side}: {result['tree_kib'] / 1024:.1f} MiB PSS")
    finally:
        broker.close()
    q = [r for r in runs if r["side"] == "qsupervisor"]
    p = [r for r in runs if r["side"] == "plain"]
    summary = {
        "workers": workers,
        "preload": PRELOAD,
        "qsupervisor_tree_mib": median([r["tree_kib"] / 1024 for r in q]),
        "qsupervisor_leader_mib": median([r["leader_kib"] / 1024 for r in q]),
        "qsupervisor_worker_mib": median([median(r["workers_kib"]) / 1024 for r in q]),
        "qsupervisor_master_mib": median([r["master_kib"] / 1024 for r in q]),
        "qsupervisor_worker_rss_mib": median([r["worker_rss_kib"] / 1024 for r in q]),
        "plain_total_mib": median([r["tree_kib"] / 1024 for r in p]),
        "plain_process_mib": median([median(r["processes_kib"]) / 1024 for r in p]),
        "plain_process_rss_mib": median([r["process_rss_kib"] / 1024 for r in p]),
        "all_qsupervisor_mib": [round(r["tree_kib"] / 1024, 1) for r in q],
        "all_plain_mib": [round(r["tree_kib"] / 1024, 1) for r in p],
    }
    summary["ratio"] = ratio(summary["qsupervisor_tree_mib"], summary["plain_total_mib"])
    summary["ratio_with_master"] = ratio(
        (summary["qsupervisor_tree_mib"] or 0) + (summary["qsupervisor_master_mib"] or 0),
        summary["plain_total_mib"])
    return {"runs": runs, "summary": summary}
