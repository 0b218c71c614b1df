"""Autoscaling with the real daemon and broker (#14): a burst grows a {min: 1, max: 6}
program to 6 and it shrinks back to 1 without stopping a busy worker (every job that
started, finished); a failed queue reading holds the count; scale pins and --auto
releases; update changes the bounds while running; two daemons on one queue share a
small backlog instead of both running at max."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .daemon import Daemon, MakeDaemon
from .harness import Ledger, program, wait_for
from .rabbit import Broker

# Quick settings, so that a test sees several decisions in seconds.
QUICK = {"target_wait": "3s", "cooldown_up": "2s", "cooldown_down": "3s", "window": "6s"}
DEADLINE = 120.0


def scaled(queue: str, ledger: Ledger, starts: Path, low: int, high: int,
           **autoscale: Any) -> dict[str, Any]:
    return program(queue, ledger, handler="e2eapp.handlers:work_with_start",
                   workers={"min": low, "max": high},
                   autoscale={**QUICK, **autoscale},
                   environment={"E2E_STARTS": str(starts)})


def autoscale_view(daemon: Daemon, name: str) -> dict[str, Any]:
    view = daemon.status(name)["programs"][name]["autoscale"]
    assert view is not None
    return view


def started_ids(starts: Path) -> set[str]:
    if not starts.exists():
        return set()
    return {json.loads(line)["id"] for line in starts.read_text().splitlines()}


def test_a_burst_scales_up_to_max_drains_and_scales_back_without_stopping_a_job(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue = broker.declare("autoscale-burst")
    starts = tmp_path / "starts"
    daemon = daemons({"burst": scaled(queue, ledger, starts, 1, 6)})
    daemon.start()
    assert autoscale_view(daemon, "burst")["current"] == 1

    ids = broker.publish_many(queue, 240, sleep=0.2)  # 48 s for one worker
    peak = 0

    def at_max() -> bool:
        nonlocal peak
        peak = max(peak, autoscale_view(daemon, "burst")["current"])
        return peak == 6

    wait_for(at_max, timeout=DEADLINE, what="the program to scale up to 6")
    view = autoscale_view(daemon, "burst")
    assert view["last_decision"]["direction"] in ("up", "hold"), view
    ledger.wait_for_ids(ids, timeout=DEADLINE)
    wait_for(lambda: autoscale_view(daemon, "burst")["current"] == 1, timeout=DEADLINE,
             what="the program to scale back to 1")
    last = autoscale_view(daemon, "burst")["last_decision"]
    assert last["direction"] in ("down", "hold") and "down" in last["text"] or \
        last["text"].startswith("hold 1"), last
    wait_for(lambda: broker.counts(queue).consumers == 1, what="one consumer left")
    # Every job that started finished, once: no busy worker was stopped mid-job.
    assert started_ids(starts) == set(ids)
    assert sorted(ledger.counts().values()) == [1] * len(ids)
    log = (daemon.workdir / "qsupervisord.log").read_text()
    decisions = [json.loads(line) for line in log.splitlines() if '"autoscale"' in line]
    assert any(d.get("direction") == "up" for d in decisions)
    assert any(d.get("direction") == "down" for d in decisions)
    assert all("killing" not in line for line in log.splitlines())


def test_a_failed_queue_reading_holds_the_count(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue = broker.declare("autoscale-unknown")
    starts = tmp_path / "starts"
    daemon = daemons({"held": scaled(queue, ledger, starts, 2, 6)})
    daemon.start()
    broker.channel.queue_delete(queue)  # the leader's passive declare fails: NOT_FOUND

    def unknown() -> bool:
        last = autoscale_view(daemon, "held")["last_decision"]
        return last is not None and "queue reading unknown" in last["reason"]

    wait_for(unknown, timeout=DEADLINE, what="a decision on an unknown reading")
    for _ in range(3):
        time.sleep(2.0)
        view = autoscale_view(daemon, "held")
        assert view["current"] == 2, view
        assert view["last_decision"]["direction"] == "hold", view


def test_scale_pins_and_auto_releases(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue = broker.declare("autoscale-pin")
    starts = tmp_path / "starts"
    daemon = daemons({"pin": scaled(queue, ledger, starts, 1, 4)})
    daemon.start()
    result = daemon.ctl("scale", "pin", "2")
    assert result.returncode == 0, str(result)
    ids = broker.publish_many(queue, 150, sleep=0.2)
    for _ in range(3):  # a backlog, and the count stays where it was pinned
        time.sleep(2.0)
        view = autoscale_view(daemon, "pin")
        assert (view["current"], view["pinned"], view["target"]) == (2, 2, 2), view
    text = daemon.ctl("status", "pin", as_json=False).stdout
    assert "pinned at 2" in text, text

    result = daemon.ctl("scale", "pin", "--auto")
    assert result.returncode == 0, str(result)
    wait_for(lambda: autoscale_view(daemon, "pin")["current"] == 4, timeout=DEADLINE,
             what="the released program to scale up to 4")
    assert autoscale_view(daemon, "pin")["pinned"] is None
    ledger.wait_for_ids(ids, timeout=DEADLINE)
    assert started_ids(starts) == set(ids)


def test_update_changes_the_bounds_while_running(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue = broker.declare("autoscale-update")
    starts = tmp_path / "starts"
    programs = {"bounds": scaled(queue, ledger, starts, 1, 4)}
    daemon = daemons(programs)
    daemon.start()
    leader = daemon.status("bounds")["programs"]["bounds"]["leader_pid"]
    programs["bounds"]["workers"] = {"min": 3, "max": 5}
    daemon.write(programs)
    result = daemon.ctl("update")
    assert result.returncode == 0, str(result)
    view = autoscale_view(daemon, "bounds")
    assert (view["min"], view["max"], view["current"]) == (3, 5, 3), view
    status = daemon.wait_running("bounds")["programs"]["bounds"]
    assert status["leader_pid"] == leader  # applied in place, no new leader
    wait_for(lambda: broker.counts(queue).consumers == 3, what="three consumers")

    programs["bounds"]["workers"] = {"min": 1, "max": 2}
    daemon.write(programs)
    assert daemon.ctl("update").returncode == 0
    assert autoscale_view(daemon, "bounds")["current"] == 2


def test_two_daemons_on_one_queue_do_not_both_sit_at_max_for_a_small_backlog(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue = broker.declare("autoscale-hosts")
    settings = {"target_wait": "10s", "cooldown_up": "4s", "cooldown_down": "30s"}
    hosts = [daemons({"shared": scaled(queue, ledger, tmp_path / f"starts{i}", 1, 6,
                                       **settings)}) for i in range(2)]
    for host in hosts:
        host.start()
    wait_for(lambda: broker.counts(queue).consumers == 2, what="one consumer per host")
    # 100 ms jobs: one host at max (6 workers, 60 jobs/s) clears 400 in under 10 s.
    ids = broker.publish_many(queue, 400, sleep=0.1)
    peaks = [0, 0]
    both_at_max = 0
    deadline = time.monotonic() + DEADLINE
    while ledger.missing(ids) and time.monotonic() < deadline:
        counts = [autoscale_view(host, "shared")["current"] for host in hosts]
        peaks = [max(p, c) for p, c in zip(peaks, counts)]
        both_at_max += counts == [6, 6]
        time.sleep(0.5)
    ledger.wait_for_ids(ids, timeout=DEADLINE)
    assert both_at_max == 0, peaks
    assert sum(peaks) <= 8, peaks
