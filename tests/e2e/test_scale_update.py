"""Changing what runs without restarting what did not change: scale and update."""

from __future__ import annotations

from typing import Any

from .daemon import MakeDaemon, worker_pids
from .harness import Ledger, alive, program, wait_for
from .rabbit import Broker


def test_scale_up_adds_slots_and_scale_down_drains_the_highest_leaving_others_untouched(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("scale")
    daemon = daemons({"scale": program(queue, ledger, workers=2),
                      "other": program(broker.declare("other"), ledger, workers=1)})
    daemon.start()
    before = daemon.status()
    first = worker_pids(before, "scale")

    result = daemon.ctl("scale", "scale", "4")
    assert result.returncode == 0, str(result)
    up = daemon.wait_running()
    grown = worker_pids(up, "scale")
    assert sorted(grown) == [0, 1, 2, 3]
    assert {s: grown[s] for s in (0, 1)} == first
    assert up["programs"]["scale"]["desired"] == 4
    broker.wait_consumers(queue, 4)

    result = daemon.ctl("scale", "scale", "1")
    assert result.returncode == 0, str(result)
    down = daemon.wait_running()
    assert worker_pids(down, "scale") == {0: first[0]}
    drained = [grown[s] for s in (1, 2, 3)]
    wait_for(lambda: not alive(drained), what="the drained workers to exit")
    broker.wait_consumers(queue, 1)

    for name in ("scale", "other"):
        assert down["programs"][name]["leader_pid"] == before["programs"][name]["leader_pid"]
    assert worker_pids(down, "other") == worker_pids(before, "other")
    ledger.wait_for_ids(broker.publish_many(queue, 3))


def test_update_adds_removes_and_scales_only_the_programs_that_changed(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queues = {name: broker.declare(name) for name in ("gone", "same", "grow", "new")}
    programs = {"gone": program(queues["gone"], ledger),
                "same": program(queues["same"], ledger),
                "grow": program(queues["grow"], ledger, workers=2)}
    daemon = daemons(programs)
    daemon.start()
    before = daemon.status()
    removed_pids = {before["programs"]["gone"]["leader_pid"],
                    *worker_pids(before, "gone").values()}

    del programs["gone"]
    programs["grow"]["workers"] = 3
    programs["new"] = program(queues["new"], ledger)
    daemon.write(programs)
    result = daemon.ctl("update")

    assert result.returncode == 0, str(result)
    outcome = result.json()
    assert sorted(outcome["programs"]) == ["gone", "grow", "new"]
    assert all(o["ok"] for o in outcome["programs"].values()), outcome
    after = daemon.wait_running()
    assert sorted(after["programs"]) == ["grow", "new", "same"]
    wait_for(lambda: not alive(removed_pids), what="the removed program's processes to exit")
    assert broker.counts(queues["gone"]).consumers == 0

    assert after["master"]["pid"] == before["master"]["pid"]
    for name in ("same", "grow"):
        assert after["programs"][name]["leader_pid"] == before["programs"][name]["leader_pid"]
    assert worker_pids(after, "same") == worker_pids(before, "same")
    grown = worker_pids(after, "grow")
    assert sorted(grown) == [0, 1, 2]
    assert {s: grown[s] for s in (0, 1)} == worker_pids(before, "grow")
    assert after["programs"]["new"]["state"] == "RUNNING"
    ledger.wait_for_ids([broker.publish(queues["new"]), broker.publish(queues["grow"])])


def test_update_with_a_broken_file_changes_nothing_and_names_file_and_line(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("keep")
    daemon = daemons({"keep": program(queue, ledger, workers=2)})
    daemon.start()
    before = daemon.status()
    good = daemon.config_path.read_text()

    lines = good.splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.strip() == "workers: 2")
    lines[number - 1] = lines[number - 1].replace("workers: 2", "workers: four")
    daemon.config_path.write_text("\n".join(lines) + "\n")
    for command in ("update", "reread"):
        result = daemon.ctl(command, as_json=False)
        assert result.returncode == 2, str(result)
        assert (f"{daemon.config_path}:{number}: programs.keep.workers: "
                f"expected an integer >= 0, got 'four'") in result.stderr, str(result)

    daemon.config_path.write_text(good + "  extra: [unclosed\n")
    result = daemon.ctl("update", as_json=False)
    assert result.returncode == 2, str(result)
    assert f"{daemon.config_path}:" in result.stderr, str(result)

    after = daemon.wait_running()
    assert after["master"]["pid"] == before["master"]["pid"]
    assert after["programs"]["keep"]["leader_pid"] == before["programs"]["keep"]["leader_pid"]
    assert worker_pids(after, "keep") == worker_pids(before, "keep")
    ledger.wait_for_ids(broker.publish_many(queue, 3))


def test_scale_down_drains_the_idle_worker_and_keeps_the_busy_one(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    # Slot 1 busy, slot 0 idle: a scale down to 1 drains slot 0's worker (taking the
    # highest slot used to stop the busy one, after its job). The busy worker is never
    # stopped, and its job finishes once.
    queue = broker.declare("scale-busy")
    daemon = daemons({"scale": program(queue, ledger, workers=1, prefetch=1,
                                       stop_timeout="30s")})
    daemon.start()
    short = broker.publish(queue, {"sleep": 6})  # slot 0 holds it...
    wait_for(lambda: _job_of(daemon.status(), 0) == short, what="slot 0 to take the short job")
    assert daemon.ctl("scale", "scale", "2").returncode == 0
    daemon.wait_running()
    broker.wait_consumers(queue, 2)
    long = broker.publish(queue, {"sleep": 12})  # ... so slot 1 takes the long one
    wait_for(lambda: _job_of(daemon.status(), 1) == long, what="slot 1 to take the long job")
    ledger.wait_for_ids([short])  # slot 0 is idle again, slot 1 still busy
    pids = worker_pids(daemon.status(), "scale")
    assert _job_of(daemon.status(), 1) == long

    result = daemon.ctl("scale", "scale", "1")
    assert result.returncode == 0, str(result)
    wait_for(lambda: not alive([pids[0]]), what="the idle worker to exit")
    assert alive([pids[1]]) == [pids[1]]
    kept = daemon.status()["programs"]["scale"]["workers"]
    assert [(w["pid"], w["draining"]) for w in kept] == [(pids[1], False)]
    ledger.wait_for_ids([long])
    assert alive([pids[1]]) == [pids[1]]  # it finished its job and stayed
    assert ledger.counts()[long] == 1 and ledger.counts()[short] == 1


def _job_of(status: dict[str, Any], slot: int) -> str | None:
    for worker in status["programs"]["scale"]["workers"]:
        if worker["slot"] == slot and worker.get("job"):
            return worker["job"]["id"]
    return None
