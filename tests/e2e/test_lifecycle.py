"""Starting, running jobs, losing a worker, shutting down, losing the master."""

from __future__ import annotations

import os
import signal

from .daemon import MakeDaemon, busy_worker, tree_pids, worker_pids
from .harness import (
    STOP_TIMEOUT,
    Ledger,
    alive,
    pid_alive,
    proc_title,
    program,
    wait_for,
)
from .rabbit import Broker


def test_start_shows_every_worker_running_with_process_titles(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"alpha": program(broker.declare("alpha"), ledger, workers=2),
                      "beta": program(broker.declare("beta"), ledger, workers=1)})
    daemon.start()

    status = daemon.status()
    master = status["master"]["pid"]
    assert daemon.proc is not None and master == daemon.proc.pid
    assert proc_title(master) == f"qsupervisord: master [{daemon.config_path}]"
    for name, workers in (("alpha", 2), ("beta", 1)):
        prog = status["programs"][name]
        assert prog["state"] == "RUNNING"
        assert prog["desired"] == prog["running"] == workers
        assert proc_title(prog["leader_pid"]) == f"qsupervisord: {name} leader"
        assert sorted(worker_pids(status, name)) == list(range(workers))
        for worker in prog["workers"]:
            assert worker["state"] == "RUNNING"
            assert proc_title(worker["pid"]) == f"qsupervisord: {name} worker {worker['slot']}"
        broker.wait_consumers(prog["queue"], workers)


def test_published_messages_are_all_handled_once(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queues = {"alpha": broker.declare("alpha"), "beta": broker.declare("beta")}
    daemon = daemons({"alpha": program(queues["alpha"], ledger, workers=2, prefetch=4),
                      "beta": program(queues["beta"], ledger, workers=1)})
    daemon.start()

    ids = broker.publish_many(queues["alpha"], 40) + broker.publish_many(queues["beta"], 10)
    ledger.wait_for_ids(ids)

    assert all(n == 1 for n in ledger.counts().values()), ledger.counts()
    wait_for(lambda: sum(w["jobs"] for p in daemon.status()["programs"].values()
                         for w in p["workers"]) == len(ids),
             what="status to count every job")
    for queue in queues.values():
        assert broker.counts(queue).messages == 0


def test_worker_killed_with_sigkill_is_replaced_and_no_message_is_lost(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("kill")
    daemon = daemons({"kill": program(queue, ledger, workers=2, prefetch=3)})
    daemon.start()
    before = worker_pids(daemon.status(), "kill")

    # One long job, so that the victim is certainly busy; then a batch that fills the
    # prefetch buffers (the victim's unacked ones must come back too).
    long_job = broker.publish(queue, {"sleep": 2})
    victim = wait_for(lambda: busy_worker(daemon.status(), "kill"), what="a busy worker")
    assert victim["job"]["id"] == long_job
    batch = broker.publish_many(queue, 20, sleep=0.02)
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        workers = {w["slot"]: w for w in daemon.status()["programs"]["kill"]["workers"]}
        new = workers[victim["slot"]]
        return (new["pid"] != victim["pid"] and new["state"] == "RUNNING"
                and new["restarts"] >= 1 and "SIGKILL" in (new["last_exit"] or ""))

    wait_for(replaced, what=f"slot {victim['slot']} to get a new RUNNING worker")
    after = worker_pids(daemon.status(), "kill")
    other = 1 - victim["slot"]
    assert after[other] == before[other], "the other worker was touched"
    assert not pid_alive(victim["pid"])

    more = broker.publish_many(queue, 10)
    entries = ledger.wait_for_ids([long_job, *batch, *more])
    redone = [e for e in entries if e["id"] == long_job]
    assert all(e["pid"] != victim["pid"] for e in redone)
    # The death counted as a failed attempt: the message came back as attempt 2.
    assert [e["attempt"] for e in redone] == [2]
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to drain")


def test_shutdown_leaves_no_process_and_removes_the_socket(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"alpha": program(broker.declare("alpha"), ledger, workers=2),
                      "beta": program(broker.declare("beta"), ledger, workers=1)})
    daemon.start()
    pids = daemon.tree_pids()
    assert len(pids) == 1 + 1 + 2 + 3  # master, herald, two leaders, three workers

    result = daemon.shutdown()

    assert result.json() == {"stopped": True}
    assert not alive(pids)
    assert not daemon.socket.exists()
    assert not daemon.pidfile.exists()
    unreachable = daemon.ctl("status")
    assert unreachable.returncode == 4, str(unreachable)


def test_master_killed_leaders_and_workers_finish_the_job_in_hand_and_exit(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("orphan")
    daemon = daemons({"orphan": program(queue, ledger, workers=2)})
    daemon.start()
    job = broker.publish(queue, {"sleep": 2})
    busy = wait_for(lambda: busy_worker(daemon.status(), "orphan"), what="a busy worker")
    status = daemon.status()
    children = tree_pids(status) - {status["master"]["pid"]}

    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()

    wait_for(lambda: not alive(children), timeout=STOP_TIMEOUT + 10,
             what=lambda: f"leaders and workers to exit after the master died; "
                          f"alive: {alive(children)}")
    entry = ledger.entry(job)
    assert entry["pid"] == busy["pid"] and not entry["redelivered"], entry
    counts = broker.counts(queue)
    assert counts.consumers == 0 and counts.messages == 0, counts  # it was acked


def test_handler_that_raises_dead_letters_the_message_and_logs_the_traceback(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("raise")
    # attempts: 1, so the failure is final at once (retries are test_runtime_poison's).
    daemon = daemons({"raise": program(queue, ledger, workers=1, attempts=1)})
    daemon.start()
    worker = daemon.status()["programs"]["raise"]["workers"][0]

    failing = broker.publish(queue, {"fail": "boom-for-the-log"})
    fine = broker.publish(queue)
    ledger.wait_for_ids([failing, fine])
    wait_for(lambda: daemon.status()["programs"]["raise"]["workers"][0]["jobs"] == 2,
             what="both jobs counted")

    # It ran once, and went to the dead-letter queue: nothing is left in the queue.
    assert ledger.counts()[failing] == 1
    assert broker.counts(queue).messages == 0
    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 1,
             what="the failed message in the dead-letter queue")
    now = daemon.status()["programs"]["raise"]["workers"][0]
    assert (now["pid"], now["state"], now["failed"]) == (worker["pid"], "RUNNING", 1)
    wait_for(lambda: "boom-for-the-log" in daemon.program_log("raise"),
             what="the failure in the program's log")
    text = daemon.program_log("raise")
    assert "job failed" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: e2e handler failure: boom-for-the-log" in text
    assert failing in text  # the log names the message


def test_current_job_gives_the_handler_message_id_and_attempt(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("job")
    daemon = daemons({"job": program(queue, ledger)})
    daemon.start()

    first = broker.publish(queue, msg_id="order-42")
    retried = broker.publish(queue, msg_id="order-43", headers={"x-qsupervisor-attempt": 3})

    entry = ledger.entry(first)
    assert (entry["id"], entry["attempt"], entry["redelivered"]) == ("order-42", 1, False)
    assert ledger.entry(retried)["attempt"] == 3
