"""`qsupervisorctl reexec` and SIGUSR2: the master replaces its code in place, with the
same pid, socket and children, and its state carried over exactly; a broken install is
refused before anything is replaced; `--all` brings every tier to the new code without a
consumer lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .daemon import Daemon, MakeDaemon, RawClient, run_ctl, worker_pids
from .harness import PACKAGE_ROOT, Ledger, alive, program, runtime_program, wait_for
from .rabbit import Broker, ConsumerSampler
from .test_metrics import Scraper, free_port

NEW_VERSION = "9.9.9+reexec"


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    """What a re-exec must not change in `status --json`: everything but the readings
    that move by themselves (uptimes, RSS, a job's running time, the queue)."""
    programs = {}
    for name, entry in status["programs"].items():
        workers = [{key: worker.get(key) for key in (
            "slot", "pid", "state", "jobs", "failed", "retried", "dead_lettered", "restarts",
            "last_exit", "max_jobs", "draining", "version", "consuming", "node")}
            | {"job": (worker["job"] or {}).get("id")} for worker in entry["workers"]]
        programs[name] = {"state": entry["state"], "leader_pid": entry["leader_pid"],
                          "leader_version": entry.get("leader_version"),
                          "desired": entry["desired"], "workers": workers}
    return {"pid": status["master"]["pid"], "herald_pid": status["master"].get("herald_pid"),
            "programs": programs}


def reexec(daemon: Daemon, *args: str) -> dict[str, Any]:
    result = daemon.ctl("reexec", *args)
    assert result.returncode == 0, str(result)
    return dict(result.json())


def events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def copy_package(tmp_path: Path) -> Path:
    """A copy of qsupervisor the daemon runs from (first on its PYTHONPATH), to upgrade or
    break in place as a package upgrade would."""
    root = tmp_path / "installed"
    shutil.copytree(PACKAGE_ROOT / "qsupervisor", root / "qsupervisor",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def set_version(root: Path, version: str) -> None:
    init = root / "qsupervisor" / "__init__.py"
    text = init.read_text()
    start = text.index('__version__ = "')
    end = text.index('"', start + len('__version__ = "'))
    init.write_text(text[:start] + f'__version__ = "{version}' + text[end:])


def test_reexec_during_a_long_job_keeps_every_process_counter_and_the_crash_ledger(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue, crashq = broker.declare("rx-long"), broker.declare("rx-crash")
    port = free_port()
    daemon = daemons({"long": runtime_program(queue, ledger, workers=2),
                      "crash": runtime_program(crashq, ledger, workers=1, attempts=2)},
                     metrics={"listen": f"127.0.0.1:{port}"})
    daemon.start()
    scraper = Scraper(port)
    ledger.wait_for_ids(broker.publish_many(queue, 6))
    # A message whose worker dies while the program stops: the crash stays in the ledger
    # (nobody consumes the redelivery) until the program starts again, after the re-exec.
    gate = tmp_path / "gate"
    gate.touch()
    killer = broker.publish(crashq, {"kill_after": str(gate)})
    wait_for(lambda: ledger.counts()[killer] == 1, what="the killer in hand")
    assert daemon.ctl("stop", "crash", "--no-wait").returncode == 0
    gate.unlink()
    wait_for(lambda: daemon.status()["programs"]["crash"]["state"] == "STOPPED",
             what="the crash program stopped, its worker dead with the message in hand")

    long_job = broker.publish(queue, {"sleep": 10})
    wait_for(lambda: ledger.counts()[long_job] == 1, what="the 10 s job in hand")
    before = daemon.status()
    jobs_before = scraper.value("qsupervisor_jobs_total", program="long", outcome="done")
    exits_before = scraper.value("qsupervisor_worker_exits_total", program="crash",
                                 reason="stopped")

    with ConsumerSampler(queue) as consumers:
        reply = reexec(daemon)
        after = daemon.status()
    assert reply["pid"] == before["master"]["pid"]
    assert comparable(after) == comparable(before)
    assert consumers.minimum == 2, f"consumers dropped to {consumers.minimum}"
    assert scraper.value("qsupervisor_jobs_total", program="long", outcome="done") == jobs_before
    assert scraper.value("qsupervisor_worker_exits_total", program="crash",
                         reason="stopped") == exits_before
    assert daemon.proc is not None and daemon.proc.poll() is None, "the master exited"
    [resumed] = events(daemon, "qsupervisord re-executed")
    assert resumed["pid"] == before["master"]["pid"]

    # The long job finishes once, in the same worker, and is acknowledged.
    wait_for(lambda: broker.counts(queue).messages == 0 and daemon.status()["programs"]
             ["long"]["workers"][0]["job"] is None
             and all(w["job"] is None for w in daemon.status()["programs"]["long"]["workers"]),
             timeout=30, what="the long job finished")
    assert ledger.counts()[long_job] == 1
    assert scraper.value("qsupervisor_jobs_total", program="long",
                         outcome="done") == (jobs_before or 0) + 1
    assert worker_pids(daemon.status(), "long") == worker_pids(before, "long")

    # The crash ledger came through: the redelivered killer counts its lost run, so its
    # second run is attempt 2, and with attempts: 2 its death there dead-letters it.
    assert daemon.ctl("start", "crash").returncode == 0
    wait_for(lambda: broker.counts(f"{crashq}.failed").messages == 1, timeout=30,
             what=lambda: f"the killer dead-lettered; ledger {ledger.entries()}")
    runs = [e["attempt"] for e in ledger.entries() if e["id"] == killer]
    assert runs == [1, 2], runs


def test_reexec_onto_code_that_fails_to_import_leaves_the_old_master_running(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    queue = broker.declare("rx-broken")
    daemon = daemons({"p": program(queue, ledger, workers=2)})
    daemon.start(env={"PYTHONPATH": str(root)})
    before = daemon.status()
    # A package upgrade that went wrong: the worker tier no longer imports.
    (root / "qsupervisor" / "worker" / "main.py").write_text("def broken(:\n")

    result = daemon.ctl("reexec")
    assert result.returncode == 1, str(result)
    assert "the new code failed its check" in result.stderr, result.stderr
    assert "SyntaxError" in result.stderr, result.stderr
    assert "the daemon runs on unchanged" in result.stderr
    assert comparable(daemon.status()) == comparable(before)
    assert not events(daemon, "qsupervisord re-executed")
    [refused] = events(daemon, "re-exec refused: the new code failed its check; the daemon "
                               "runs on")
    assert "worker/main.py" in refused["output"]
    ledger.wait_for_ids(broker.publish_many(queue, 4))

    # Repaired, the same command goes through.
    shutil.copy(PACKAGE_ROOT / "qsupervisor" / "worker" / "main.py",
                root / "qsupervisor" / "worker" / "main.py")
    assert reexec(daemon)["pid"] == before["master"]["pid"]
    after = daemon.status()
    assert worker_pids(after, "p") == worker_pids(before, "p")
    assert after["programs"]["p"]["leader_pid"] == before["programs"]["p"]["leader_pid"]


def test_reexec_while_a_reload_rolls_and_a_slot_backs_off_carries_both_over(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue, failing = broker.declare("rx-roll"), broker.declare("rx-backoff")
    daemon = daemons({
        "roll": runtime_program(queue, ledger, workers=2, stop_timeout="30s"),
        # One worker hangs at import; the other slot's die there: it backs off 1 s, 2 s,
        # 4 s... between restarts.
        "bad": program(failing, ledger, handler="e2eapp.one_hangs:work", workers=2,
                       start_retries=20, stop_timeout="2s",
                       environment={"E2E_HANG_LOCK": str(tmp_path / "hang.lock")})})
    daemon.start(wait=False)
    daemon.wait_running("roll")
    gate = tmp_path / "gate"
    gate.touch()
    held = broker.publish(queue, {"block_while": str(gate)})
    wait_for(lambda: ledger.counts()[held] == 1, what="a job in hand")
    busy_pid = next(w["pid"] for w in daemon.status()["programs"]["roll"]["workers"]
                    if w["job"])

    # A reload that waits: the busy worker is drained (STOPPING, its job in hand) once
    # its successor runs, and the reload is not complete until it has exited.
    waiting = subprocess.Popen(daemon.ctl_argv("reload", "roll"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)

    def draining() -> bool:
        workers = daemon.status()["programs"]["roll"]["workers"]
        return any(w["pid"] == busy_pid and w["state"] == "STOPPING" for w in workers)

    wait_for(draining, what="the busy worker draining in the reload")
    # A slot of `bad` due to restart in 4 s or more, from now on at least 2 s: the re-exec
    # (under a second) happens inside its backoff.
    slot, backoff = wait_for(lambda: _long_backoff(daemon), timeout=60,
                             what="a slot of the bad program in a long backoff")
    before = daemon.status()
    reexec(daemon)
    after = daemon.status()
    assert comparable(after)["programs"]["roll"] == comparable(before)["programs"]["roll"]
    in_backoff = [w for w in comparable(before)["programs"]["bad"]["workers"]
                  if w["slot"] == slot]
    assert in_backoff[0]["state"] == "BACKOFF"
    assert [w for w in comparable(after)["programs"]["bad"]["workers"]
            if w["slot"] == slot] == in_backoff

    # The client whose reload waited is told, and the reload goes on without it.
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1
    assert "re-executed itself" in stderr, stderr
    gate.unlink()
    wait_for(lambda: not alive([busy_pid]), timeout=30, what="the drained worker to exit")
    daemon.wait_running("roll")
    assert ledger.counts()[held] == 1
    assert broker.counts(queue).messages == 0

    # The backoff timer came through: the slot restarts when its BACKOFF said.
    [resumed] = events(daemon, "qsupervisord re-executed")

    def restart() -> dict[str, Any] | None:
        return next((e for e in events(daemon, "worker started")
                     if e.get("program") == "bad" and e.get("slot") == slot
                     and e["timestamp"] > backoff["timestamp"]), None)

    restarted = wait_for(restart, timeout=60, what="the backing-off slot restarted")
    assert restarted["timestamp"] > resumed["timestamp"]
    waited = _seconds(restarted["timestamp"]) - _seconds(backoff["timestamp"])
    assert backoff["retry_in"] - 0.05 <= waited <= backoff["retry_in"] + 1.0, (
        backoff, restarted)


def _long_backoff(daemon: Daemon) -> tuple[int, dict[str, Any]] | None:
    """A slot of `bad` whose current backoff (the last BACKOFF, or the crash-backoff
    floor's shorter delay: pool._keep_one_coming) ends 2 s from now or later, and set a
    delay of 4 s or more."""
    latest: dict[int, dict[str, Any]] = {}
    for event in daemon.log_events():
        if event.get("program") != "bad":
            continue
        if event.get("new") == "BACKOFF" or event.get("event", "").startswith("no worker left"):
            latest[event["slot"]] = event
        elif event.get("event") == "worker started":
            latest.pop(event["slot"], None)
    for slot, event in latest.items():
        due = _seconds(event["timestamp"]) + event["retry_in"]
        if event["retry_in"] >= 4 and due - time.time() >= 2:
            return slot, event
    return None


def test_sigusr2_reexecutes_like_the_command(daemons: MakeDaemon, broker: Broker,
                                             ledger: Ledger) -> None:
    queue = broker.declare("rx-usr2")
    daemon = daemons({"p": program(queue, ledger, workers=2)})
    daemon.start()
    before = daemon.status()
    os.kill(before["master"]["pid"], signal.SIGUSR2)
    wait_for(lambda: events(daemon, "qsupervisord re-executed"), what="the re-exec")
    [requested] = events(daemon, "re-exec requested")
    assert requested["by"] == "SIGUSR2"
    assert comparable(daemon.status()) == comparable(before)
    ledger.wait_for_ids(broker.publish_many(queue, 4))


def test_reexec_all_brings_every_tier_to_the_new_version_without_losing_a_consumer(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    alpha, beta = broker.declare("rx-all-a"), broker.declare("rx-all-b")
    daemon = daemons({"alpha": program(alpha, ledger, workers=2),
                      "beta": program(beta, ledger, workers=1)})
    daemon.start(env={"PYTHONPATH": str(root)})
    before = daemon.status()
    old = before["master"]["version"]
    set_version(root, NEW_VERSION)

    # The master alone first: its leaders and workers still run the old code.
    reply = reexec(daemon)
    assert (reply["previous"], reply["version"]) == (old, NEW_VERSION)
    status = daemon.status()
    assert status["master"]["version"] == NEW_VERSION
    assert status["master"]["pid"] == before["master"]["pid"]
    for name in ("alpha", "beta"):
        assert status["programs"][name]["leader_version"] == old
        assert {w["version"] for w in status["programs"][name]["workers"]} == {old}
    text = daemon.ctl("status", as_json=False).stdout
    assert f"leader runs qsupervisor {old}" in text, text

    with ConsumerSampler(alpha) as on_alpha, ConsumerSampler(beta) as on_beta:
        reply = reexec(daemon, "--all")
    assert reply["programs"] == {name: {"ok": True, "state": "RUNNING", "problems": []}
                                 for name in ("alpha", "beta")}
    after = daemon.wait_running()
    assert after["master"]["pid"] == before["master"]["pid"]
    for name in ("alpha", "beta"):
        program_status = after["programs"][name]
        assert program_status["leader_version"] == NEW_VERSION
        assert program_status["leader_pid"] != before["programs"][name]["leader_pid"]
        assert {w["version"] for w in program_status["workers"]} == {NEW_VERSION}
    assert on_alpha.minimum >= 2, f"alpha's consumers dropped to {on_alpha.minimum}"
    assert on_beta.minimum >= 1, f"beta's consumers dropped to {on_beta.minimum}"
    assert "leader runs" not in daemon.ctl("status", as_json=False).stdout
    ledger.wait_for_ids(broker.publish_many(alpha, 4) + broker.publish_many(beta, 2))


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_clients_polling_through_reexecs_are_always_answered(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """Connections made during the exec wait in the listening socket's backlog, and an
    open connection between requests is handed over: a monitoring loop, with a connection
    per request or one kept open, never sees an error. (`status` waits for its queue
    reading: the re-exec waits for it too.)"""
    queue = broker.declare("rx-poll")
    daemon = daemons({"p": program(queue, ledger, workers=1)})
    daemon.start()
    polling = subprocess.Popen(
        ["sh", "-c", f"end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do "
                     f"{' '.join(daemon.ctl_argv('status'))} >/dev/null || exit 1; done"])
    stop = threading.Event()
    answers: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def keep_asking() -> None:
        client = RawClient(daemon.socket)
        try:
            n = 0
            while not stop.is_set():
                n += 1
                cmd = "status" if n % 2 else "pid"
                client.send(json.dumps({"v": 1, "id": n, "cmd": cmd}).encode() + b"\n")
                answers.append(client.reply())
        except BaseException as exc:  # reported in the test's thread
            failures.append(exc)
        finally:
            client.close()

    asking = threading.Thread(target=keep_asking)
    asking.start()

    def twenty_more() -> Callable[[], bool]:
        """A condition: 20 more requests answered than now (or the asking failed)."""
        count = len(answers)
        return lambda: len(answers) >= count + 20 or bool(failures)

    try:
        for _ in range(3):  # each re-exec between requests answered before and after it
            wait_for(twenty_more(), what="requests answered on the open connection")
            reexec(daemon)
        wait_for(twenty_more(), what="requests answered after the last re-exec")
    finally:
        stop.set()
        asking.join(30)
    assert not failures, failures
    assert answers and all(a.get("ok") for a in answers), [a for a in answers if not a.get("ok")]
    assert [a["id"] for a in answers] == list(range(1, len(answers) + 1))
    assert polling.wait(30) == 0, "a client polling status during the re-execs got an error"
    assert len(events(daemon, "qsupervisord re-executed")) == 3


def test_after_a_partial_update_reexec_refuses_until_the_whole_file_is_applied(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    alpha, beta = broker.declare("rx-part-a"), broker.declare("rx-part-b")
    daemon = daemons({"alpha": program(alpha, ledger), "beta": program(beta, ledger)})
    daemon.start()
    daemon.write({"alpha": program(alpha, ledger, workers=2), "beta": program(beta, ledger)})
    assert daemon.ctl("update", "alpha").returncode == 0
    result = daemon.ctl("reexec")
    assert result.returncode == 1, str(result)
    assert "applied in part" in result.stderr and "qsupervisorctl update" in result.stderr
    assert daemon.ctl("update").returncode == 0
    reexec(daemon)
    assert daemon.status()["programs"]["alpha"]["desired"] == 2


def test_reexec_keeps_the_socket_pidfile_and_log_files_it_started_with(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    """Settings that take effect at a restart (socket, pidfile, logfile, log_dir for
    running programs), edited and applied, still wait for a restart: the re-executed
    master serves the same socket, logs to the same file and removes what it created."""
    queue = broker.declare("rx-files")
    daemon = daemons({"p": program(queue, ledger)})
    daemon.start()
    old = dict(daemon.settings)
    moved = tmp_path / "moved"
    daemon.settings.update(socket=str(moved / "qsv.sock"), pidfile=str(moved / "qsv.pid"),
                           logfile=str(moved / "qsupervisord.log"),
                           log_dir=str(moved / "logs"))
    daemon.write({"p": program(queue, ledger)})
    target = ["-s", old["socket"]]
    assert run_ctl(target, "update").returncode == 0
    result = run_ctl(target, "reexec")
    assert result.returncode == 0, str(result)

    assert not moved.exists(), sorted(str(p) for p in moved.rglob("*"))
    assert Path(old["pidfile"]).read_text().strip() == str(result.json()["pid"])
    assert any(e.get("event") == "qsupervisord re-executed" for e in daemon.log_events())
    ledger.wait_for_ids([broker.publish(queue, {"print": "still here"})])
    wait_for(lambda: "still here" in (Path(old["log_dir"]) / "p.log").read_text(),
             what="the program's output in the file it started with")
    assert run_ctl(target, "shutdown").returncode == 0
    wait_for(lambda: not Path(old["pidfile"]).exists() and not Path(old["socket"]).exists(),
             what="the pidfile and the socket file removed at exit")
    assert not moved.exists()
