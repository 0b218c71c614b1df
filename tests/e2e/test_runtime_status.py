"""What `status --json` tells about the queue and the jobs: depths, consumers, dead
letters, the last minute's counts, and the job each worker is running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .daemon import MakeDaemon, RawClient
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker


def test_status_shows_queue_depths_last_minute_counts_and_the_running_job(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("status")
    daemon = daemons({"status": runtime_program(queue, ledger, prefetch=1, attempts=2)})
    daemon.start()

    def program() -> dict[str, Any]:
        return daemon.status("status")["programs"]["status"]

    # Two jobs done, one undecodable (dead-lettered), one failing twice (retried, then
    # dead-lettered): 5 finished, 3 of them failures, 1 retry, 2 dead letters.
    failing = tmp_path / "failing"
    failing.touch()
    fine = broker.publish_many(queue, 2)
    broker.publish_raw(queue, b"not json")
    poison = broker.publish(queue, {"fail_while": str(failing)})
    ledger.wait_for_ids(fine)
    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 2,
             what=lambda: f"two dead letters; ledger: {ledger.entries()}")
    assert [e["attempt"] for e in ledger.entries() if e["id"] == poison] == [1, 2]

    # A job that runs until the test lets it go, and three messages waiting behind it.
    blocker = tmp_path / "blocker"
    blocker.touch()
    long_job = broker.publish(queue, {"block_while": str(blocker), "tag": "long"})
    waiting = broker.publish_many(queue, 3)
    try:
        def running_a_while() -> Any:
            current = program()
            job = current["workers"][0]["job"]
            return current if job and job["running_for"] >= 0.5 else None

        busy = wait_for(running_a_while, what=lambda: f"the long job in status: {program()}")
        job = busy["workers"][0]["job"]
        assert job["id"] == long_job
        assert wait_for(lambda: (program()["workers"][0]["job"] or {}).get(
            "running_for", 0) > job["running_for"], what="running_for to grow")

        def depths_shown() -> bool:
            stats = program()["queue_stats"] or {}
            return stats == {"ready": 3, "unacked": 1, "consumers": 1, "dead_letter_ready": 2}

        wait_for(depths_shown, what=lambda: f"the queue depths: {program()['queue_stats']}")
        assert program()["last_minute"] == {"done": 5, "failed": 3, "retried": 1}
    finally:
        blocker.unlink()

    ledger.wait_for_ids([long_job, *waiting])

    def idle_again() -> bool:
        current = program()
        return (current["workers"][0]["job"] is None
                and current["last_minute"] == {"done": 9, "failed": 3, "retried": 1}
                and current["queue_stats"] == {"ready": 0, "unacked": 0, "consumers": 1,
                                               "dead_letter_ready": 2})

    wait_for(idle_again, what=lambda: f"status of an idle worker: {program()}")


def test_status_brief_gives_totals_per_program_without_a_line_per_worker(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("brief")
    daemon = daemons({"brief": runtime_program(queue, ledger, workers=3, prefetch=1)})
    daemon.start()
    blocker = tmp_path / "blocker"
    blocker.touch()
    long_job = broker.publish(queue, {"block_while": str(blocker)})
    try:
        def one_busy() -> Any:
            program = daemon.status("brief")["programs"]["brief"]
            return program if program["summary"]["busy"] == 1 else None

        full = wait_for(one_busy, what=lambda: f"one busy worker: {daemon.status('brief')}")
        # The totals agree with the entries they sum.
        workers = full["workers"]
        assert full["summary"]["states"] == {"RUNNING": 3}
        assert full["summary"]["held"] == sum(w["held"] for w in workers) == 1
        assert full["summary"]["rss"] == sum(w["rss"] for w in workers) > 0
        assert full["queue_stats"]["unacked"] == 1

        brief = daemon.ctl("status", "--brief", "brief")
        assert brief.returncode == 0, str(brief)
        program = brief.json()["programs"]["brief"]
        assert program["workers"] == []
        assert program["summary"]["states"] == {"RUNNING": 3}
        assert program["summary"]["busy"] == 1 and program["summary"]["held"] == 1
        assert program["queue_stats"]["unacked"] == 1

        text = daemon.ctl("status", "-b", as_json=False)
        assert text.returncode == 0, str(text)
        assert "workers: 3 RUNNING; 1 busy; rss " in text.stdout, text.stdout
        assert "worker 0" not in text.stdout, text.stdout
        assert "worker 0" in daemon.ctl("status", as_json=False).stdout
    finally:
        blocker.unlink()
    ledger.wait_for_ids([long_job])


def test_status_refuses_a_workers_argument_that_is_not_a_boolean(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"flag": runtime_program(broker.declare("flag"), ledger)})
    daemon.start()
    client = RawClient(daemon.socket)
    try:
        client.send(b'{"v": 1, "id": 1, "cmd": "status", "args": {"workers": "no"}}\n')
        reply = client.reply()
    finally:
        client.close()
    assert reply["ok"] is False
    assert reply["error"] == {"code": "bad_request", "message": "'workers' must be true or false"}
    assert daemon.ctl("pid").returncode == 0  # the daemon carries on
