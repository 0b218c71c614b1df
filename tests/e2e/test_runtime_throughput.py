"""Many messages through recycled workers: every one handled, none lost, none twice."""

from __future__ import annotations

import collections

from .daemon import MakeDaemon, worker_pids
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker

MESSAGES = 5000
WORKERS = 4
MAX_JOBS = 200


def test_5000_messages_through_4_workers_recycled_every_200_jobs_are_all_handled_once(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("bulk")
    daemon = daemons({"bulk": runtime_program(queue, ledger, workers=WORKERS, prefetch=10,
                                              max_jobs=MAX_JOBS, max_jobs_jitter=0)})
    daemon.start()

    ids = broker.publish_batch(queue, ({"n": n} for n in range(MESSAGES)))
    entries = ledger.wait_for_ids(ids, timeout=180)

    # No loss, and nothing ran twice: no worker died, so nothing was redelivered after
    # it had started (messages handed back by a recycling worker had not started).
    handled = collections.Counter(e["id"] for e in entries)
    assert set(handled) == set(ids)
    twice = {i: n for i, n in handled.items() if n > 1}
    assert not twice, f"ran more than once: {list(twice.items())[:10]}"
    assert all(e["ok"] and e["attempt"] == 1 for e in entries)
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")

    # Each worker ran exactly max_jobs jobs and was recycled, except the ones running now.
    per_pid = collections.Counter(e["pid"] for e in entries)
    assert max(per_pid.values()) <= MAX_JOBS, per_pid
    recycled = [pid for pid, jobs in per_pid.items() if jobs == MAX_JOBS]
    current = set(worker_pids(daemon.status(), "bulk").values())
    assert {pid for pid, jobs in per_pid.items() if jobs < MAX_JOBS} <= current, (per_pid, current)
    assert MESSAGES // MAX_JOBS <= len(per_pid) <= MESSAGES // MAX_JOBS + WORKERS, per_pid
    print(f"\n{len(per_pid)} worker pids handled {MESSAGES} messages, "
          f"{len(recycled)} of them recycled after {MAX_JOBS} jobs")

    def restarts_match() -> bool:
        return sum(w["restarts"] for w in daemon.status("bulk")["programs"]["bulk"]["workers"]
                   ) == len(recycled)

    wait_for(restarts_match, what=lambda: f"status to count {len(recycled)} restarts: "
                                          f"{daemon.status('bulk')['programs']['bulk']}")
    status = daemon.wait_running("bulk")["programs"]["bulk"]
    assert all(w["last_exit"] == "recycled: max_jobs" for w in status["workers"]
               if w["restarts"]), [(w["slot"], w["last_exit"]) for w in status["workers"]]
    # Every exit was a recycle, replaced at once: none taken for a crash (and backed off).
    exits = [e["exit"] for e in daemon.log_events() if e.get("event") == "state" and "exit" in e]
    assert exits and set(exits) == {"recycled: max_jobs"}, collections.Counter(exits)
    wait_for(lambda: (daemon.status("bulk")["programs"]["bulk"]["queue_stats"] or {}
                      ).get("ready") == 0, what="status to show the queue empty")
