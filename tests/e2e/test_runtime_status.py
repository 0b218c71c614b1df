"""What `status --json` tells about the queue and the jobs: depths, consumers, dead
letters, the last minute's counts, and the job each worker is running."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from .daemon import MakeDaemon
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker


def test_status_shows_queue_depths_last_minute_counts_and_the_running_job(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("status")
    daemon = daemons({"status": runtime_program(queue, ledger, prefetch=1, attempts=2)})
    daemon.start()

    def program() -> Dict[str, Any]:
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
