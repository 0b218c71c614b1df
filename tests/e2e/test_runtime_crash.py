"""A message that kills its worker every time ends in the dead-letter queue instead of
looping forever; the other messages and the worker slots carry on."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from .daemon import MakeDaemon
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker

ATTEMPTS = 3


# How the job ends its worker, and how the dead letter's error names it. os._exit(0) used to
# be taken for a clean exit: never counted, the message ran 36 times in 13 minutes.
DEATHS: dict[str, tuple[dict[str, Any], str]] = {"SIGKILL": ({"kill": True}, "SIGKILL"),
          "os._exit(0)": ({"exit_status": 0}, "exit code 0")}


@pytest.mark.parametrize("death", sorted(DEATHS))
def test_a_message_that_kills_its_worker_is_dead_lettered_after_attempts_deliveries(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, death: str) -> None:
    payload, named = DEATHS[death]
    queue = broker.declare("crash")
    dead_letters = f"{queue}.failed"
    daemon = daemons({"crash": runtime_program(queue, ledger, workers=2, prefetch=2,
                                               attempts=ATTEMPTS)})
    daemon.start()

    before = broker.publish_many(queue, 10, sleep=0.05)
    killer = broker.publish(queue, {**payload, "tag": "killer"})
    after = broker.publish_many(queue, 10, sleep=0.05)
    wait_for(lambda: broker.counts(dead_letters).messages == 1, timeout=60,
             what=lambda: f"the killer dead-lettered; ledger: {ledger.entries()}")
    ledger.wait_for_ids(before + after)

    # It ran `attempts` times, each time in a different worker, which it killed.
    runs = [e for e in ledger.entries() if e["id"] == killer]
    assert [r["attempt"] for r in runs] == list(range(1, ATTEMPTS + 1)), runs
    assert len({r["pid"] for r in runs}) == ATTEMPTS
    (props, _), = broker.peek(dead_letters)
    assert props.message_id == killer
    assert props.headers["x-qsupervisor-reason"] == "crashed"
    assert props.headers["x-qsupervisor-attempts"] == ATTEMPTS
    assert named in props.headers["x-qsupervisor-error"]
    listing = daemon.ctl("failed", "crash").json()
    assert [(m["id"], m["reason"]) for m in listing["messages"]] == [(killer, "crashed")]

    # Every other message was handled. One may have run twice only if a kill explains
    # it: it was the job a killed worker ran just before the killer, whose ack had not
    # left the process yet (at-least-once), and its second run is a redelivery.
    entries = ledger.entries()
    others = [e for e in entries if e["id"] != killer]
    counts = collections.Counter(e["id"] for e in others)
    assert set(counts) == set(before + after)
    jobs_of = collections.defaultdict(list)
    for entry in entries:
        jobs_of[entry["pid"]].append(entry["id"])
    explained = {jobs_of[r["pid"]][-2] for r in runs if len(jobs_of[r["pid"]]) > 1}
    twice = {msg_id for msg_id, n in counts.items() if n > 1}
    assert twice <= explained and max(counts.values()) <= 2, f"unexplained: {entries}"
    for msg_id in twice:
        second = [e for e in others if e["id"] == msg_id][1]
        assert second["redelivered"], second

    # The slots were refilled after each kill, and keep working.
    status = daemon.wait_running("crash")["programs"]["crash"]
    assert sum(w["restarts"] for w in status["workers"]) == ATTEMPTS
    assert any(named in (w["last_exit"] or "") for w in status["workers"]), status
    more = broker.publish_many(queue, 4)
    ledger.wait_for_ids(more)
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")
