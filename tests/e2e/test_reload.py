"""Reloads: which processes are replaced, what code the new workers run, and that a
program never has fewer consumers than `workers` while it happens."""

from __future__ import annotations

from pathlib import Path

from .daemon import MakeDaemon, worker_pids
from .harness import Ledger, alive, pid_alive, program, wait_for, write_module
from .rabbit import Broker, ConsumerSampler

HANDLER_MODULE = """\
from e2eapp.handlers import run_job

VERSION = {version!r}


def work(payload):
    run_job(payload, version=VERSION)
"""

BROKEN_MODULE = 'raise ImportError("this handler cannot be imported (on purpose)")\n'


def test_reload_replaces_only_that_programs_workers_and_never_drops_consumers(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("alpha")
    daemon = daemons({"alpha": program(queue, ledger, workers=2),
                      "beta": program(broker.declare("beta"), ledger, workers=1)})
    daemon.start()
    before = daemon.status()
    broker.wait_consumers(queue, 2)

    with ConsumerSampler(queue) as consumers:
        result = daemon.ctl("reload", "alpha")
    assert result.returncode == 0, str(result)
    assert result.json()["programs"]["alpha"]["ok"] is True

    after = daemon.wait_running()
    old, new = worker_pids(before, "alpha"), worker_pids(after, "alpha")
    assert sorted(new) == [0, 1]
    assert not set(old.values()) & set(new.values()), "every alpha worker is new"
    assert worker_pids(after, "beta") == worker_pids(before, "beta")
    for name in ("alpha", "beta"):
        assert after["programs"][name]["leader_pid"] == before["programs"][name]["leader_pid"]
    assert after["master"]["pid"] == before["master"]["pid"]
    assert consumers.minimum >= 2, f"consumers dropped to {consumers.minimum} during the reload"
    wait_for(lambda: not alive(old.values()), what="the old workers to exit")
    ledger.wait_for_ids(broker.publish_many(queue, 5))


def test_reload_preload_refreshes_preloaded_code_and_keeps_the_master(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, code_dir: Path) -> None:
    module = code_dir / "e2e_preloaded.py"
    write_module(module, "VERSION = 'p1'\n")
    queue = broker.declare("pre")
    daemon = daemons({"pre": program(queue, ledger, workers=2, preload=["e2e_preloaded"],
                                     environment={"E2E_VERSION_MODULE": "e2e_preloaded"})})
    daemon.start()
    before = daemon.status()
    assert before["programs"]["pre"]["preload"]["stale"] == []
    assert ledger.entry(broker.publish(queue))["version"] == "p1"

    write_module(module, "VERSION = 'p2'\n")
    preload = daemon.status()["programs"]["pre"]["preload"]
    assert preload["stale"] == [str(module)]
    assert "reload pre --preload" in preload["message"]

    # A plain reload forks the new workers from the same leader: still the old code.
    result = daemon.ctl("reload", "pre")
    assert result.returncode == 0, str(result)
    assert ledger.entry(broker.publish(queue))["version"] == "p1"

    with ConsumerSampler(queue) as consumers:
        result = daemon.ctl("reload", "pre", "--preload")
    assert result.returncode == 0, str(result)
    after = daemon.wait_running()
    assert after["master"]["pid"] == before["master"]["pid"]
    assert after["programs"]["pre"]["leader_pid"] != before["programs"]["pre"]["leader_pid"]
    assert after["programs"]["pre"]["preload"]["stale"] == []
    assert consumers.minimum >= 2
    new_pids = set(worker_pids(after, "pre").values())
    entries = ledger.wait_for_ids(broker.publish_many(queue, 4))
    assert {e["version"] for e in entries} == {"p2"}
    assert {e["pid"] for e in entries} <= new_pids
    old_leader = before["programs"]["pre"]["leader_pid"]
    wait_for(lambda: not pid_alive(old_leader), what="the old leader to exit")


def test_plain_reload_runs_an_edited_handler_module(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, code_dir: Path) -> None:
    module = code_dir / "e2e_handler_mod.py"
    write_module(module, HANDLER_MODULE.format(version="h1"))
    queue = broker.declare("edit")
    daemon = daemons({"edit": program(queue, ledger, workers=2,
                                      handler="e2e_handler_mod:work")})
    daemon.start()
    before = daemon.status()
    assert ledger.entry(broker.publish(queue))["version"] == "h1"

    write_module(module, HANDLER_MODULE.format(version="h2"))
    result = daemon.ctl("reload", "edit")

    assert result.returncode == 0, str(result)
    after = daemon.wait_running()
    assert after["programs"]["edit"]["leader_pid"] == before["programs"]["edit"]["leader_pid"]
    entries = ledger.wait_for_ids(broker.publish_many(queue, 4))
    assert {e["version"] for e in entries} == {"h2"}


def test_reload_to_a_handler_that_cannot_import_keeps_the_old_workers_consuming(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, code_dir: Path) -> None:
    module = code_dir / "e2e_handler_mod.py"
    write_module(module, HANDLER_MODULE.format(version="good"))
    queue = broker.declare("bad")
    daemon = daemons({"bad": program(queue, ledger, workers=2, start_retries=2,
                                     handler="e2e_handler_mod:work")})
    daemon.start()
    old = worker_pids(daemon.status(), "bad")
    broker.wait_consumers(queue, 2)

    write_module(module, BROKEN_MODULE)
    with ConsumerSampler(queue) as consumers:
        result = daemon.ctl("reload", "bad", as_json=False)

    assert result.returncode == 1, str(result)
    assert "bad: FAILED" in result.stdout and "cannot be imported" in result.stdout
    assert consumers.minimum >= 2, f"consumers dropped to {consumers.minimum}"
    assert not [pid for pid in old.values() if not pid_alive(pid)], "an old worker exited"
    workers = daemon.status("bad")["programs"]["bad"]["workers"]
    assert {w["pid"]: w["state"] for w in workers if w["pid"] in old.values()} == {
        pid: "RUNNING" for pid in old.values()}
    assert {w["state"] for w in workers if w["pid"] not in old.values()} == {"FATAL"}
    entries = ledger.wait_for_ids(broker.publish_many(queue, 4))
    assert {e["version"] for e in entries} == {"good"}
    assert {e["pid"] for e in entries} <= set(old.values())
