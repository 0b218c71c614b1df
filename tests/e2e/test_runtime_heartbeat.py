"""A job longer than several heartbeat intervals: the handler runs off pika's I/O thread,
so heartbeats keep flowing and the message is acked once, on the same connection."""

from __future__ import annotations

from .daemon import MakeDaemon, worker_pids
from .harness import BROKER_URL, Ledger, runtime_program, wait_for
from .rabbit import Broker, connection_heartbeats

HEARTBEAT = 2  # seconds
JOB = 7.0  # seconds: more than three heartbeat intervals


def test_a_job_longer_than_three_heartbeats_is_acked_once_without_reconnecting(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("heartbeat")
    separator = "&" if "?" in BROKER_URL else "?"
    daemon = daemons({"heartbeat": runtime_program(queue, ledger)},
                     broker=f"{BROKER_URL}{separator}heartbeat={HEARTBEAT}")
    daemon.start()
    pid = worker_pids(daemon.status(), "heartbeat")[0]
    name = f"qsupervisor heartbeat worker 0 pid {pid}"
    assert connection_heartbeats().get(name) == HEARTBEAT, "the URL's heartbeat is not in use"

    long_job = broker.publish(queue, {"sleep": JOB, "tag": "long"})
    entry = ledger.entry(long_job)
    assert entry["pid"] == pid

    def acked() -> bool:
        worker = daemon.status("heartbeat")["programs"]["heartbeat"]["workers"][0]
        return worker["jobs"] == 1 and worker["job"] is None and worker["held"] == 0

    wait_for(acked, timeout=JOB + 30, what="the long job to finish and be acknowledged")
    # A message after it is handled on the same connection, by the same worker.
    after = broker.publish(queue, {"tag": "after"})
    assert ledger.entry(after)["pid"] == pid
    counts = broker.counts(queue)
    assert (counts.messages, counts.consumers) == (0, 1), counts

    runs = [e for e in ledger.entries() if e["id"] == long_job]
    assert len(runs) == 1 and not runs[0]["redelivered"], runs
    worker = daemon.status("heartbeat")["programs"]["heartbeat"]["workers"][0]
    assert (worker["pid"], worker["restarts"], worker["broker_error"]) == (pid, 0, None)
    log = daemon.program_log("heartbeat")
    assert "broker connection lost" not in log, log
    assert "reconnected" not in log, log
