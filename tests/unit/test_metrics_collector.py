"""What the endpoint shows (master/metrics.py, master/totals.py), from a real Master on fake
leaders and workers: counters folded from exited workers, never going backwards, and queue
readings served from the last answer without waiting for the leader."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from qsupervisor.master.exits import Exit, ExitKind
from qsupervisor.master.metrics import Collector
from qsupervisor.master.totals import exit_reason
from qsupervisor.stats_segment import DEAD, DONE, RETRIED
from tests.unit.test_master import Daemon

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(daemon: Daemon) -> Samples:
    text = Collector(daemon.master).scrape().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def run_jobs(worker: object, *outcomes: int) -> None:
    stats = worker.stats  # type: ignore[attr-defined]
    for outcome in outcomes:
        stats.job_started("m")
        stats.job_finished(outcome)


def test_exited_workers_are_folded_in_and_nothing_goes_backwards(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, {"orders": {"workers": 2}})
    world = daemon.world
    first, second = world.worker(0), world.worker(1)
    run_jobs(first, DONE, DONE, RETRIED)
    run_jobs(second, DONE, DEAD)
    samples = scrape(daemon)
    assert value(samples, "qsupervisor_jobs_total", program="orders", outcome="done") == 3
    assert value(samples, "qsupervisor_jobs_total", program="orders", outcome="failed") == 2
    first.exit(0, reason="max_jobs")
    world.run()
    run_jobs(world.worker(0), DONE)  # its replacement
    samples = scrape(daemon)
    assert value(samples, "qsupervisor_jobs_total", program="orders", outcome="done") == 4
    assert value(samples, "qsupervisor_jobs_total", program="orders",
                 outcome="retried") == 1
    assert value(samples, "qsupervisor_jobs_total", program="orders",
                 outcome="dead_lettered") == 1
    assert value(samples, "qsupervisor_job_duration_seconds_count", program="orders") == 6
    assert value(samples, "qsupervisor_worker_exits_total", program="orders",
                 reason="max_jobs") == 1
    # A program changed by update keeps its runtime, and so its counters.
    daemon.master.programs["orders"].apply_config(daemon.master.config.programs["orders"])
    world.run()
    for worker in world.workers():
        worker.exit(sig=9)
    world.run()
    samples = scrape(daemon)
    assert value(samples, "qsupervisor_jobs_total", program="orders", outcome="done") == 4
    assert value(samples, "qsupervisor_worker_exits_total", program="orders",
                 reason="crashed") >= 2  # type: ignore[operator]


def test_a_program_removed_and_added_back_keeps_its_counters(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, {"orders": {"workers": 1}})
    run_jobs(daemon.world.worker(0), DONE, DONE)
    daemon.master.retire_program("orders")
    daemon.world.run()  # the fake worker obeys its SIGTERM
    assert "orders" not in daemon.master.programs
    daemon.master.add_program("orders", autostart=True)
    daemon.world.run()
    samples = scrape(daemon)
    assert value(samples, "qsupervisor_jobs_total", program="orders", outcome="done") == 2


def test_queue_readings_never_wait_and_a_failed_one_is_absent(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, {"orders": {"workers": 1}})
    world = daemon.world
    collector = Collector(daemon.master)

    def samples() -> Samples:
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(collector.scrape().decode())
                for s in family.samples}

    world.queue_stats = {"ready": 12, "consumers": 1, "dead_letter_ready": 3}
    first = samples()  # asked, not answered yet: no figure rather than a wait
    assert value(first, "qsupervisor_queue_messages", program="orders", state="ready") is None
    assert value(first, "qsupervisor_queue_messages", program="orders", state="unacked") == 0
    world.run()  # the leader answers
    second = samples()
    assert value(second, "qsupervisor_queue_messages", program="orders", state="ready") == 12
    assert value(second, "qsupervisor_dead_letter_messages", program="orders") == 3
    assert value(second, "qsupervisor_queue_consumers", program="orders") == 1
    world.queue_stats = {"error": "broker unreachable"}
    world.advance(2.0)
    samples()  # asks again
    world.run()
    third = samples()
    assert value(third, "qsupervisor_queue_messages", program="orders", state="ready") is None
    assert value(third, "qsupervisor_dead_letter_messages", program="orders") is None


def test_exit_reasons() -> None:
    def meaning(kind: ExitKind) -> Exit:
        return Exit(kind, "", True, False, None)

    assert exit_reason(meaning(ExitKind.RECYCLED), None, "max_memory") == "max_memory"
    assert exit_reason(meaning(ExitKind.RECYCLED), None, "stop") == "stopped"
    assert exit_reason(meaning(ExitKind.STOPPED), "reload", None) == "reload"
    assert exit_reason(meaning(ExitKind.STOPPED), "scale", None) == "scale"
    assert exit_reason(meaning(ExitKind.STOPPED), "shutdown", None) == "stopped"
    assert exit_reason(meaning(ExitKind.TIMED_OUT), None, "timeout") == "timeout"
    assert exit_reason(meaning(ExitKind.KILLED), "stop", None) == "killed"
    assert exit_reason(meaning(ExitKind.REDELIVERED), None, None) == "killed"
    assert exit_reason(meaning(ExitKind.FAILED), None, "handler import failed") == "failed"
    assert exit_reason(meaning(ExitKind.CRASHED), None, None) == "crashed"
