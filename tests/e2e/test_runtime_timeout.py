"""Job time limits: a handler stuck in a C call is abandoned, its worker replaced, its
message retried then dead-lettered; the other workers carry on. A limit the broker would
cut short is a configuration error."""

from __future__ import annotations

import subprocess

from .daemon import MakeDaemon
from .harness import QSUPERVISORD, Ledger, pid_alive, runtime_program, wait_for
from .rabbit import Broker

TIMEOUT = 3.0


def test_a_job_stuck_past_its_timeout_is_abandoned_retried_then_dead_lettered(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("timeout")
    dead_letters = f"{queue}.failed"
    daemon = daemons({"timeout": runtime_program(queue, ledger, workers=2, attempts=2,
                                                 timeout=f"{TIMEOUT:g}s")})
    daemon.start()

    stuck = broker.publish(queue, {"hang": True, "tag": "stuck"})
    first = ledger.entry(stuck)
    # While it is stuck, the other worker serves the queue.
    others = broker.publish_many(queue, 5)
    for entry in ledger.wait_for_ids(others):
        assert entry["pid"] != first["pid"]
        assert entry["t"] < first["t"] + TIMEOUT, "not handled while the other job was stuck"

    wait_for(lambda: broker.counts(dead_letters).messages == 1, timeout=4 * TIMEOUT + 30,
             what=lambda: f"the stuck message dead-lettered; ledger: {ledger.entries()}")
    runs = [e for e in ledger.entries() if e["id"] == stuck]
    assert [r["attempt"] for r in runs] == [1, 2], runs
    assert runs[1]["pid"] != runs[0]["pid"]
    assert runs[1]["t"] >= runs[0]["t"] + TIMEOUT
    (props, _), = broker.peek(dead_letters)
    assert props.message_id == stuck
    headers = props.headers
    assert (headers["x-qsupervisor-reason"], headers["x-qsupervisor-attempts"]) == ("timeout", 2)
    assert "timeout" in headers["x-qsupervisor-error"]
    listing = daemon.ctl("failed", "timeout").json()
    assert [(m["id"], m["reason"]) for m in listing["messages"]] == [(stuck, "timeout")]

    # Both stuck workers were replaced, their exits saying why.
    status = daemon.wait_running("timeout")["programs"]["timeout"]
    assert sum(w["restarts"] for w in status["workers"]) == 2
    assert all("timeout" in w["last_exit"] for w in status["workers"] if w["restarts"]), status
    wait_for(lambda: not any(pid_alive(r["pid"]) for r in runs),
             what="the stuck workers' processes to be gone")
    later = broker.publish_many(queue, 4)
    ledger.wait_for_ids(later)
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")
    assert all(n == 1 for i, n in ledger.counts().items() if i != stuck)


def test_a_timeout_at_or_above_the_consumer_timeout_is_refused_by_check(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"slow": runtime_program(broker.declare("slow"), ledger, timeout="10s")},
                     consumer_timeout="10s")
    lines = daemon.config_path.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if text.strip() == "timeout: 10s")

    proc = subprocess.run([QSUPERVISORD, "--check", "-c", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60)

    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    report = proc.stdout + proc.stderr
    assert f"{daemon.config_path}:{line}: programs.slow.timeout" in report, report
    assert "consumer_timeout" in report
