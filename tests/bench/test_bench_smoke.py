"""The benchmark suite (bench/) at a tiny size, so that it keeps working as the code changes.

Every part runs for real against the local RabbitMQ, with real daemons and plain pika
consumers, then the report is rendered. Nothing here asserts that anything is fast: the
numbers of a run this small mean nothing; what is checked is that each part produces its
results, cleans up after itself, and that the report shows them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from qsupervisor.broker.delays import DelayChain

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH_DIR))

import run as bench_run  # noqa: E402  (bench/run.py)

from qsvbench import (  # noqa: E402
    autoscale,
    commands,
    control,
    delay,
    handback,
    idle,
    memory,
    reexec,
    reload,
    report,
    startup,
    throughput,
)
from qsvbench.common import DECLARED, Broker, Settings  # noqa: E402


def _part(result: dict[str, Any]) -> dict[str, Any]:
    return {"result": result, "load_before": {"1m": 0.0}, "load_after": {"1m": 0.0},
            "duration_s": 0.0, "quick": True, "date": "smoke test"}


@pytest.fixture
def settings() -> Settings:
    return Settings(quick=True, repeats=1, log=lambda text: None)


def test_every_part_runs_and_the_report_shows_it(settings: Settings, tmp_path: Path) -> None:
    parts = {
        "throughput": _part(throughput.run(settings, workers=[1], queue_types=["classic"],
                                           jobs=["noop"])),
        "memory": _part(memory.run(settings, workers=2)),
        "control": _part(control.run(settings, sizes=(2,))),
        "reload": _part(reload.run(settings, workers=2, repeats=1)),
        "startup": _part(startup.run(settings, sizes=(2,), separate=False)),
        "delay": _part(delay.run(settings, count=5, longest=0.5)),
        "idle": _part(idle.run(settings, workers=2, window=0.5)),
        "handback": _part(handback.run(settings, sizes=(2,))),
        "commands": _part(commands.run(settings)),
        "autoscale": _part(autoscale.run(settings, high=2, burst=10, quiet=1.0, steady=4.0)),
        "reexec": _part(reexec.run(settings, sizes=(2,), repeats=1)),
    }
    tp = parts["throughput"]["result"]["summary"]
    assert [(r["queue_type"], r["job"], r["workers"]) for r in tp] == [("classic", "noop", 1)]
    assert tp[0]["plain"]["median"] > 0 and tp[0]["qsupervisor"]["median"] > 0
    assert parts["memory"]["result"]["summary"]["qsupervisor_tree_mib"] > 0
    assert parts["control"]["result"]["sizes"][0]["rt_version"]["median_ms"] > 0
    assert parts["reload"]["result"]["summary"]["min_consumers"] is not None
    assert parts["startup"]["result"]["sizes"][0]["all_s"] > 0
    assert parts["delay"]["result"]["summary"]["runs"] >= 5
    assert parts["idle"]["result"]["summary"]["window_s"] > 0
    hb = parts["handback"]["result"]["summary"]
    assert [(r["queue_type"], r["n"]) for r in hb] == [("quorum", 2), ("classic", 2)]
    assert set(hb[0]["methods"]) == {"nack", "close", "copy"}
    assert hb[0]["copy_ok"]  # a copy starts at x-delivery-count 0; none lost or duplicated
    cmd = parts["commands"]["result"]["summary"]
    assert cmd and cmd[0]["case"] == "true"
    assert all(r[side]["median"] > 0 for r in cmd for side in ("bare", "qsupervisor", "no broker"))
    rx = parts["reexec"]["result"]["sizes"][0]["summary"]
    assert set(rx) == {"reexec", "reexec --all", "reload --preload"}
    assert rx["reexec"]["gap_ms"] > 0 and rx["reexec"]["took_ms"] > 0
    assert rx["reexec --all"]["min_consumers"] is not None

    out = tmp_path / "benchmarks.md"
    data = {"machine": {"cpu": "smoke"}, "bytecode": "smoke", "parts": parts}
    text = report.render(data, out, tmp_path / "plot.png")
    for heading in ("## Targets", "## 1. Throughput", "## 2. Memory", "## 3. Control latency",
                    "## 4. Reload", "## 5. Start-up", "## 6. Delay lateness", "## 7. Idle master",
                    "## 8. Handing back prefetched messages", "## Command programs",
                    "## Autoscaling", "## Re-exec"):
        assert heading in text
    out.write_text(text)
    assert report.load_previous(out)["parts"].keys() == parts.keys()


def test_the_command_line_runs_one_part_and_keeps_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It would change this process's environment (bytecode cache) for the tests after it.
    monkeypatch.setattr(bench_run, "cache_bytecode", lambda: "smoke test")
    out = tmp_path / "benchmarks.md"
    out.write_text(report.render({"machine": {}, "parts": {"idle": _part(
        {"summary": {"workers": 1, "window_s": 1.0, "tick_s": 0.01, "master_cpu_s": 0.0,
                     "leader_cpu_s": 0.0, "workers_cpu_s": 0.0, "master_cpu_ticks_s": 0.0,
                     "master_pct_core": 0.0, "workers_pct_core": 0.0}})}}, out, tmp_path / "p.png"))
    assert bench_run.main(["--quick", "--only", "reload", "--out", str(out)]) == 0
    kept = report.load_previous(out)["parts"]
    assert set(kept) == {"idle", "reload"}
    assert "## 4. Reload" in out.read_text() and "## 7. Idle master" in out.read_text()


def test_nothing_the_suite_declared_is_left_on_the_broker() -> None:
    """Runs last in this file: every queue the parts used, its dead-letter queue and its
    delay chain are gone."""
    assert DECLARED, "the tests above declared no queue"
    broker = Broker()
    try:
        left = []
        for queue in DECLARED:
            chain = DelayChain(f"{queue}.delay", queue)
            for name in (queue, f"{queue}.failed", chain.level_queue(0),
                         chain.level_queue(chain.levels - 1)):
                if broker.exists(name):
                    left.append(name)
    finally:
        broker.conn.close()  # not close(): that would delete (and so hide) leftovers
    assert not left
