"""A handler that keeps failing on some messages: retries with growing delays, then the
dead-letter queue with the error; `failed` shows it, `retry-failed` brings it back,
`purge-failed` empties the queue. And a handler that holds the GIL past the heartbeat
timeout: each run whose connection died under it counts as an attempt, and no two runs of
the message overlap."""

from __future__ import annotations

import collections
import json
import re
import time
from pathlib import Path
from typing import Any

import pika
import pytest

from .daemon import MakeDaemon
from .harness import BROKER_URL, Ledger, runtime_program, wait_for
from .rabbit import Broker, rabbitmqctl

ATTEMPTS = 4
INITIAL, FACTOR = 0.3, 2  # backoff without jitter: retries after 0.3, 0.6 and 1.2 s
BOUND = 0.1 + 1.0  # the delay resolution plus a generous margin


def attempts_of(ledger: Ledger, msg_id: str) -> list[dict[str, Any]]:
    return sorted((e for e in ledger.entries() if e["id"] == msg_id), key=lambda e: e["t"])


def test_poison_messages_are_retried_with_growing_delays_then_dead_lettered_with_their_error(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("poison")
    dead_letters = f"{queue}.failed"
    backoff = {"initial": f"{INITIAL}s", "factor": FACTOR, "max": "10s", "jitter": 0}
    daemon = daemons({"poison": runtime_program(queue, ledger, workers=2, attempts=ATTEMPTS,
                                                backoff=backoff)})
    daemon.start()
    flag = tmp_path / "poisoned"
    flag.touch()

    poison = [broker.publish(queue, {"fail_while": str(flag), "tag": f"poison {n}"})
              for n in range(2)]
    good = broker.publish_many(queue, 5)
    ledger.wait_for_ids(good)
    wait_for(lambda: broker.counts(dead_letters).messages == len(poison), timeout=60,
             what=lambda: f"both poison messages dead-lettered; ledger: {ledger.entries()}")

    # Each poison message ran `attempts` times, each retry no earlier than its backoff
    # delay (and within the bound), the gaps growing; good messages ran once.
    assert all(ledger.counts()[i] == 1 for i in good)
    for msg_id in poison:
        runs = attempts_of(ledger, msg_id)
        assert [r["attempt"] for r in runs] == list(range(1, ATTEMPTS + 1)), runs
        assert not any(r["ok"] for r in runs)
        gaps = [later["t"] - earlier["t"] for earlier, later in zip(runs, runs[1:])]
        for retry, gap in enumerate(gaps, start=1):
            delay = INITIAL * FACTOR ** (retry - 1)
            assert delay <= gap <= delay + BOUND, f"retry {retry} after {gap:.3f}s ({gaps})"
        assert gaps == sorted(gaps), f"the delays do not grow: {gaps}"

    # The dead letters carry their error in the documented headers.
    headers = {props.message_id: props.headers for props, _ in broker.peek(dead_letters)}
    assert sorted(headers) == sorted(poison)
    for h in headers.values():
        assert h["x-qsupervisor-reason"] == "exception"
        assert h["x-qsupervisor-error-type"] == "RuntimeError"
        assert h["x-qsupervisor-error"] == f"poisoned by {flag}"
        assert h["x-qsupervisor-attempts"] == ATTEMPTS
        assert h["x-qsupervisor-queue"] == queue
        assert "RuntimeError: poisoned by" in h["x-qsupervisor-traceback"]
        assert h["x-qsupervisor-first-failed-at"] <= h["x-qsupervisor-last-failed-at"]

    # `failed` shows them, without taking them.
    shown = daemon.ctl("failed", "poison")
    assert shown.returncode == 0, str(shown)
    listing = shown.json()
    assert (listing["queue"], listing["total"]) == (dead_letters, len(poison))
    assert sorted(m["id"] for m in listing["messages"]) == sorted(poison)
    for message in listing["messages"]:
        assert (message["reason"], message["error_type"], message["attempts"]) == (
            "exception", "RuntimeError", ATTEMPTS)
        assert message["error"] == f"poisoned by {flag}"
    assert broker.counts(dead_letters).messages == len(poison)

    # Status counts the last minute's failures and retries, and the dead letters.
    def counted() -> Any:
        program = daemon.status("poison")["programs"]["poison"]
        minute, depths = program["last_minute"], program["queue_stats"] or {}
        return (minute["retried"] == len(poison) * (ATTEMPTS - 1)
                and minute["failed"] == len(poison) * ATTEMPTS
                and minute["done"] == len(good) + len(poison) * ATTEMPTS
                and depths.get("dead_letter_ready") == len(poison))

    wait_for(counted, what=lambda: f"status to count the failures: {daemon.status('poison')}")

    # The fix is deployed (the file goes): retry-failed brings one back and it succeeds.
    flag.unlink()
    fixed, left = poison
    moved = daemon.ctl("retry-failed", "poison", fixed, as_json=False)
    assert moved.returncode == 0, str(moved)
    assert "moved 1 message" in moved.stdout
    wait_for(lambda: len(attempts_of(ledger, fixed)) == ATTEMPTS + 1,
             what=f"the retried message {fixed} to run again")
    again = attempts_of(ledger, fixed)[-1]
    assert (again["attempt"], again["ok"]) == (1, True), again
    remaining = daemon.ctl("failed", "poison").json()
    assert [m["id"] for m in remaining["messages"]] == [left]

    purged = daemon.ctl("purge-failed", "poison", "--yes", as_json=False)
    assert purged.returncode == 0, str(purged)
    assert "purged 1 message" in purged.stdout
    assert daemon.ctl("failed", "poison").json()["total"] == 0
    assert broker.counts(dead_letters).messages == 0
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")
    assert collections.Counter(e["id"] for e in ledger.entries())[left] == ATTEMPTS


def test_what_the_broker_dead_letters_by_policy_shows_in_failed_and_can_be_retried(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """The policy docs/operations.md gives against RabbitMQ 4's delivery limit: a dead-letter
    target on the program's queue. Exercised here with a message that expires (RabbitMQ 3.10
    has no default delivery limit): the broker moves it to `<queue>.failed`, `failed` names
    the broker's reason, and `retry-failed` brings it back to a worker."""
    queue = broker.declare("policy")
    dead_letters = f"{queue}.failed"
    policy = f"qsv-e2e-{queue}"
    rabbitmqctl("set_policy", "--apply-to", "queues", policy, f"^{re.escape(queue)}$",
                json.dumps({"dead-letter-exchange": "", "dead-letter-routing-key": dead_letters}))
    try:
        daemon = daemons({"policy": runtime_program(queue, ledger, workers=0)})
        daemon.start()
        wait_for(lambda: broker.exists(dead_letters), what=f"{dead_letters} to be declared")

        expired = "expires-1"
        broker.channel.basic_publish(
            "", queue, json.dumps({}).encode(),
            pika.BasicProperties(message_id=expired, content_type="application/json",
                                 delivery_mode=2, expiration="1"))
        wait_for(lambda: broker.counts(dead_letters).messages == 1,
                 what=lambda: f"the broker to dead-letter {expired} into {dead_letters}")

        listing = daemon.ctl("failed", "policy")
        assert listing.returncode == 0, str(listing)
        [shown] = listing.json()["messages"]
        assert (shown["id"], shown["reason"], shown["queue"]) == (
            expired, "broker: expired", queue)
        text = daemon.ctl("failed", "policy", as_json=False)
        assert "broker: expired" in text.stdout, text.stdout

        assert daemon.ctl("scale", "policy", "1").returncode == 0
        moved = daemon.ctl("retry-failed", "policy", "--all", as_json=False)
        assert moved.returncode == 0, str(moved)
        ledger.wait_for_ids([expired])
        assert broker.counts(dead_letters).messages == 0
    finally:
        rabbitmqctl("clear_policy", policy)



HEARTBEAT = 2  # seconds
# Seconds one C call holds the GIL, so that the connection dies under it: RabbitMQ 3.10
# closed it about 6 s into the job. With two workers a run lasts no longer than that: the
# worker still holding the job is killed once the message has gone to the other one.
HOLD_GIL = 5 * HEARTBEAT


@pytest.mark.parametrize("workers", [2, 1])
def test_a_job_that_holds_the_gil_past_the_heartbeat_counts_every_lost_run_and_never_overlaps(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, workers: int) -> None:
    """pika's I/O thread cannot answer heartbeats while the handler holds the GIL; the
    broker closes the connection and redelivers the message. With two workers the other
    one gets it while the first still runs it: before the fix the message ran 10 times in
    53 s, 9 of them while an earlier run was still going, always as attempt 1, and was
    never dead-lettered; now the master kills the first. With one worker the job ends, its
    ack is lost, and the copy comes back to the same worker (before: 4 runs in 45 s, all
    attempt 1); now the worker tells the master it lost the outcome."""
    queue = broker.declare("gil")
    dead_letters = f"{queue}.failed"
    separator = "&" if "?" in BROKER_URL else "?"
    daemon = daemons({"gil": runtime_program(queue, ledger, workers=workers, attempts=3)},
                     broker=f"{BROKER_URL}{separator}heartbeat={HEARTBEAT}")
    daemon.start()
    hog = broker.publish(queue, {"hold_gil": HOLD_GIL, "tag": "hog"})

    def runs() -> list[dict[str, Any]]:
        return [e for e in attempts_of(ledger, hog) if e.get("end") is None]

    wait_for(lambda: broker.counts(dead_letters).messages == 1, timeout=30 + 15 * workers,
             what=lambda: f"the message dead-lettered after 3 runs; runs: {runs()}")
    time.sleep(1.0)  # a stray copy would run now
    started = runs()
    assert [r["attempt"] for r in started] == [1, 2, 3], started
    # No run began while an earlier one was still going: each earlier run had written its
    # end line, or its process was gone (killed, and reaped) when the next one started.
    ends = {(e["pid"], e["t"]): e["end"] for e in attempts_of(ledger, hog) if "end" in e}
    for earlier, later in zip(started, started[1:]):
        assert ends.get((earlier["pid"], earlier["t"]), 0) <= later["t"], (earlier, later)
    assert all(r["alive"] == [] for r in started), started
    counts = broker.counts(queue)
    assert counts.messages == 0, counts

    (props, _), = broker.peek(dead_letters)
    assert props.message_id == hog
    assert props.headers["x-qsupervisor-reason"] == "crashed"
    assert props.headers["x-qsupervisor-attempts"] == 3
    # Each lost run counted, whether the master killed the worker still holding it (its
    # copy had gone to the other worker) or the worker told it had lost the outcome.
    assert "broker connection lost" in props.headers["x-qsupervisor-error"], props.headers
