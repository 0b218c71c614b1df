"""Programs that run a command per job (`command:`), end to end: the real daemon runs
tests/e2e/apps/commands/job.py for each message, and the tests count what it recorded
and what the broker holds.

What a Python handler's program promises holds for a command too: every message done
once, failures retried then dead-lettered with the reason (here the exit status and the
tail of stderr), a stop that lets the job in hand finish, and nothing left running when a
job, a worker or the master ends.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from .daemon import MakeDaemon, worker_pids
from .harness import APPS_DIR, QUICK_BACKOFF, Ledger, pid_alive, wait_for
from .rabbit import Broker

JOB = str(APPS_DIR / "commands" / "job.py")


def command_program(queue: str, ledger: Ledger, **settings: Any) -> dict[str, Any]:
    program: dict[str, Any] = {
        "command": [sys.executable, JOB, "{message_id}", "{attempt}", "{timeout}",
                    "{program}", "{queue}", "{worker_pid}"],
        "queue": queue, "workers": 1, "stop_timeout": "5s",
        "backoff": dict(QUICK_BACKOFF), "environment": {"E2E_LEDGER": str(ledger.path)},
    }
    program.update(settings)
    return program


def started(ledger: Ledger) -> list[dict[str, Any]]:
    path = Path(str(ledger.path) + ".started")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_started(ledger: Ledger, msg_id: str) -> dict[str, Any]:
    return wait_for(lambda: next((s for s in started(ledger) if s["id"] == msg_id), None),
                    what=f"the command of {msg_id} to start")


@pytest.fixture
def leftovers(ledger: Ledger) -> Any:
    """Kill whatever a job recorded, whatever the test's outcome: a failing test must not
    leave sleeps behind."""
    yield
    pids = [s["pid"] for s in started(ledger)] + [s["child"] for s in started(ledger) if s["child"]]
    pids += [e["child"] for e in ledger.entries() if e.get("child")]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_every_job_runs_its_command_once_with_its_facts(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("cmd")
    daemon = daemons({"cmd": command_program(queue, ledger, workers=2, timeout="20s",
                                             max_jobs=7)})
    daemon.start()

    def publish(numbers: range) -> list[str]:
        return [broker.publish(queue, {"n": n, "stdout": f"out-{n}", "stderr": f"err-{n}"},
                               headers={"count": 7, "tag": "x"}) for n in numbers]

    ids = publish(range(20))
    daemon.ctl("reload", "cmd", timeout=60)  # recycling (max_jobs) and a reload mid-way
    ids += publish(range(20, 40))
    entries = ledger.wait_for_ids(ids)

    assert sorted(ledger.counts().values()) == [1] * 40
    for entry in entries:
        assert entry["argv"] == [entry["id"], "1", "20", "cmd", queue, str(entry["worker"])]
        assert entry["headers"]["tag"] == "x"
    assert len({e["worker"] for e in entries}) >= 6, "workers were recycled after 7 jobs"
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")
    # Its stdout and stderr are the program's captured output.
    output = daemon.ctl("tail", "cmd", "-n", "400", as_json=False).stdout
    assert "out-7" in output and "err-7" in output, output[-2000:]
    assert broker.counts(f"{queue}.failed").messages == 0


def test_a_failing_command_is_retried_then_dead_lettered_with_its_stderr(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("cmdfail")
    daemon = daemons({"cmdfail": command_program(queue, ledger, attempts=3)})
    daemon.start()
    bad = broker.publish(queue, {"exit": 3, "stderr": "PHP Fatal error: no such class Foo"})
    good = broker.publish(queue, {})

    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 1,
             what=lambda: f"the failing job dead-lettered; ledger {ledger.entries()}")
    assert [e["attempt"] for e in ledger.entries() if e["id"] == bad] == [1, 2, 3]
    assert ledger.counts()[good] == 1
    (props, body), = broker.peek(f"{queue}.failed")
    assert props.message_id == bad and json.loads(body)["exit"] == 3
    headers = props.headers
    assert headers["x-qsupervisor-reason"] == "exit"
    assert headers["x-qsupervisor-error-type"] == "ExitStatus"
    assert headers["x-qsupervisor-error"] == "command exited with status 3"
    assert "PHP Fatal error: no such class Foo" in headers["x-qsupervisor-traceback"]
    listing = daemon.ctl("failed", "cmdfail").json()
    assert [(m["id"], m["reason"]) for m in listing["messages"]] == [(bad, "exit")]
    # The worker was never replaced: a failed command is the job's failure, not its.
    assert all(w["restarts"] == 0 for w in daemon.status("cmdfail")["programs"]["cmdfail"]["workers"])


def test_a_command_past_its_timeout_is_ended_with_its_children_and_the_worker_goes_on(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, leftovers: None) -> None:
    queue = broker.declare("cmdslow")
    daemon = daemons({"cmdslow": command_program(queue, ledger, attempts=2, timeout="1s")})
    daemon.start()
    worker = worker_pids(daemon.wait_running("cmdslow"), "cmdslow")[0]
    slow = broker.publish(queue, {"sleep": 60, "spawn": True})

    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 1, timeout=60,
             what="the slow job dead-lettered after two timeouts")
    runs = [s for s in started(ledger) if s["id"] == slow]
    assert len(runs) == 2
    for run in runs:
        wait_for(lambda run=run: not pid_alive(run["pid"]) and not pid_alive(run["child"]),
                 what=f"the timed-out command {run} and its child to be gone")
    (props, _), = broker.peek(f"{queue}.failed")
    assert props.headers["x-qsupervisor-reason"] == "timeout"
    assert "SIGTERM" in props.headers["x-qsupervisor-error"]
    # The same worker carries on.
    after = broker.publish(queue, {})
    assert ledger.entry(after)["worker"] == worker
    assert worker_pids(daemon.status("cmdslow"), "cmdslow")[0] == worker


def test_a_stop_lets_the_command_in_hand_finish(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, leftovers: None) -> None:
    queue = broker.declare("cmdstop")
    daemon = daemons({"cmdstop": command_program(queue, ledger)})
    daemon.start()
    msg = broker.publish(queue, {"sleep": 2})
    wait_started(ledger, msg)

    daemon.ctl("stop", "cmdstop", timeout=30)

    assert ledger.counts()[msg] == 1, "the job in hand finished before the worker left"
    assert broker.counts(queue).messages == 0, "and its message was acked"


def test_at_stop_timeout_the_command_is_killed_and_its_message_kept(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, leftovers: None) -> None:
    queue = broker.declare("cmdkill")
    daemon = daemons({"cmdkill": command_program(queue, ledger, stop_timeout="1s")})
    daemon.start()
    msg = broker.publish(queue, {"sleep": 60, "spawn": True})
    run = wait_started(ledger, msg)

    daemon.ctl("stop", "cmdkill", timeout=30)

    wait_for(lambda: not pid_alive(run["pid"]) and not pid_alive(run["child"]),
             what="the command and its child to be gone after stop_timeout")
    assert ledger.counts()[msg] == 0
    wait_for(lambda: broker.counts(queue).messages == 1, what="the message back in its queue")


def test_a_worker_killed_during_a_job_leaves_nothing_running(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, leftovers: None) -> None:
    queue = broker.declare("cmdcrash")
    daemon = daemons({"cmdcrash": command_program(queue, ledger, attempts=3)})
    daemon.start()
    msg = broker.publish(queue, {"sleep": 60, "spawn": True, "sleep_until_attempt": 1})
    run = wait_started(ledger, msg)
    worker = worker_pids(daemon.status("cmdcrash"), "cmdcrash")[0]

    os.kill(worker, signal.SIGKILL)

    wait_for(lambda: not pid_alive(run["pid"]) and not pid_alive(run["child"]),
             what="the dead worker's command and its child to be ended by the leader")
    # The lost run counts as an attempt; the message runs again, once, on the new worker.
    entry = ledger.entry(msg)
    assert entry["attempt"] == 2 and entry["worker"] != worker
    assert ledger.counts()[msg] == 1


def test_the_master_dying_lets_the_command_in_hand_finish_and_leaves_nothing(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, leftovers: None) -> None:
    queue = broker.declare("cmdorphan")
    daemon = daemons({"cmdorphan": command_program(queue, ledger)})
    daemon.start()
    msg = broker.publish(queue, {"sleep": 2})
    run = wait_started(ledger, msg)
    tree = daemon.tree_pids()

    os.kill(daemon.master_pid(), signal.SIGKILL)

    assert ledger.entry(msg)["pid"] == run["pid"], "the job finished"
    wait_for(lambda: not any(pid_alive(p) for p in tree | {run["pid"]}),
             what="the leader, the worker and the command to be gone")
    wait_for(lambda: broker.counts(queue).messages == 0, what="the finished job acked")


def test_a_command_is_fresh_code_on_every_job_without_a_reload(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\necho v1 >> {tmp_path}/versions\n")
    script.chmod(0o755)
    queue = broker.declare("cmdfresh")
    daemon = daemons({"cmdfresh": {"command": str(script), "queue": queue}})
    daemon.start()
    broker.publish(queue, {})
    versions = tmp_path / "versions"
    wait_for(lambda: versions.exists() and versions.read_text() == "v1\n", what="v1 to run")

    script.write_text(f"#!/bin/sh\necho v2 >> {tmp_path}/versions\n")
    broker.publish(queue, {})

    wait_for(lambda: versions.read_text() == "v1\nv2\n", what="the edited command to run")


def test_a_command_that_cannot_be_found_fails_to_start_and_loses_nothing(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("cmdmissing")
    daemon = daemons({"cmdmissing": {"command": "/nonexistent/qsv-job --id {message_id}",
                                     "queue": queue, "start_retries": 2}})
    msg = broker.publish(queue, {})
    daemon.start(wait=False)
    wait_for(daemon.socket.exists, what="the control socket")

    def fatal_worker() -> object:
        workers = daemon.status("cmdmissing")["programs"]["cmdmissing"]["workers"]
        return workers[0] if workers and workers[0]["state"] == "FATAL" else None

    worker = wait_for(fatal_worker, what="the program's worker to go FATAL")
    assert "/nonexistent/qsv-job does not exist" in (worker["last_exit"] or ""), worker
    assert "cannot run the command" in daemon.program_log("cmdmissing")
    assert broker.counts(queue).messages == 1 and msg
    assert broker.counts(f"{queue}.failed").messages == 0



def test_a_command_runs_in_the_programs_directory_with_its_environment(
        daemons: MakeDaemon, broker: Broker, tmp_path: Path) -> None:
    # (`user:` is the worker's own uid, which the command inherits; it is not tested here:
    # the interpreter these tests run under may live where another user cannot read.)
    workdir = tmp_path / "jobs-home"
    workdir.mkdir()
    queue = broker.declare("cmdenv")
    daemon = daemons({"cmdenv": {
        "command": ["sh", "-c", 'echo "uid=$(id -u) cwd=$(pwd) shop=$SHOP_ENV"'],
        "queue": queue, "directory": str(workdir), "environment": {"SHOP_ENV": "staging"}}})
    daemon.start()

    broker.publish(queue, {})

    expected = f"uid={os.geteuid()} cwd={workdir} shop=staging"
    wait_for(lambda: expected in daemon.ctl("tail", "cmdenv", as_json=False).stdout,
             what=lambda: f"{expected!r} in the program's output: "
                          f"{daemon.ctl('tail', 'cmdenv', as_json=False).stdout[-1500:]}")
