"""Nothing qsupervisor does uses up a message's delivery limit.

A quorum queue counts every return of a message and, past its delivery limit, drops it (or
dead-letters it, given a target). RabbitMQ 4.0 gives every quorum queue a limit of 20 and
counts every return, a basic.nack included; 3.x counts the same returns but sets no limit.
Each test here puts a limit of 20 on the queues that RabbitMQ 4 would limit by policy, on
every version, so that what it proves on 4.x is proven on 3.x too, and counts every message
in the ledger. Not on a dead-letter queue qsupervisor declared: it carries its own
x-delivery-limit, which beats 4's default but not a policy (the broker takes the lower).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from .daemon import MakeDaemon
from .harness import Ledger, runtime_program, wait_for
from .rabbit import DEFAULT_DELIVERY_LIMIT, Broker, delivery_limit

ATTEMPTS = 2
LOOKS = 100  # `failed` runs: five times RabbitMQ 4's default delivery limit


def _fail_messages(tmp_path: Path, broker: Broker, queue: str, count: int) -> list[str]:
    flag = tmp_path / "poisoned"
    flag.touch()
    return [broker.publish(queue, {"fail_while": str(flag), "tag": f"poison {n}"})
            for n in range(count)]


def _dead_lettered(broker: Broker, ledger: Ledger, dead_letters: str, count: int) -> None:
    wait_for(lambda: broker.counts(dead_letters).messages == count, timeout=60,
             what=lambda: f"{count} messages dead-lettered into {dead_letters}; ledger: "
                          f"{ledger.entries()}")


def _assert_each_ran(ledger: Ledger, ids: list[str], times: int) -> None:
    counts = ledger.counts()
    assert {i: counts[i] for i in ids} == {i: times for i in ids}


def test_failed_run_100_times_keeps_every_dead_letter_with_its_error(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("look")
    dead_letters = f"{queue}.failed"
    daemon = daemons({"look": runtime_program(queue, ledger, attempts=ATTEMPTS)})
    daemon.start()
    wait_for(lambda: broker.exists(dead_letters), what=f"{dead_letters} to be declared")
    with delivery_limit(queue):
        # Failed for real: the handler raises on every attempt.
        poison = _fail_messages(tmp_path, broker, queue, 3)
        _dead_lettered(broker, ledger, dead_letters, len(poison))
        _assert_each_ran(ledger, poison, ATTEMPTS)
        for look in range(LOOKS):
            listing = daemon.ctl("failed", "look")
            assert listing.returncode == 0, str(listing)
            shown = listing.json()
            assert [m["id"] for m in shown["messages"]] == poison, f"look {look + 1}: {shown}"
        assert broker.counts(dead_letters).messages == len(poison)
        [first, *_] = shown["messages"]
        assert (first["reason"], first["error_type"], first["attempts"]) == (
            "exception", "RuntimeError", ATTEMPTS)
        assert "poisoned by" in first["error"]
    _assert_each_ran(ledger, poison, ATTEMPTS)  # looking never ran one again


def test_a_worker_recycled_after_every_job_with_prefetch_10_handles_200_of_200(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """The prefetch window narrows to the jobs left before max_jobs, and the consumer is
    cancelled before the last ack: a recycle has nothing to give back."""
    queue = broker.declare("maxjobs")
    dead_letters = f"{queue}.failed"
    daemon = daemons({"maxjobs": runtime_program(queue, ledger, workers=1, prefetch=10,
                                                 max_jobs=1)})
    daemon.start()
    wait_for(lambda: broker.exists(dead_letters), what=f"{dead_letters} to be declared")
    with delivery_limit(queue):
        ids = broker.publish_many(queue, 200)
        ledger.wait_for_ids(ids, timeout=240)
        wait_for(lambda: broker.counts(queue).messages == 0, what=f"{queue} to be empty")
    _assert_each_ran(ledger, ids, 1)
    assert broker.counts(dead_letters).messages == 0
    assert len({e["pid"] for e in ledger.entries()}) == 200  # a worker per job


def test_workers_recycled_with_30_prefetched_messages_give_them_back_without_losing_one(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """max_memory recycles after any job, with up to 29 messages prefetched and not started:
    more returns than the limit for the messages at the head, were they counted."""
    queue = broker.declare("handback")
    dead_letters = f"{queue}.failed"
    daemon = daemons({"handback": runtime_program(queue, ledger, workers=1, prefetch=30,
                                                  max_memory="1MiB")})
    daemon.start()
    wait_for(lambda: broker.exists(dead_letters), what=f"{dead_letters} to be declared")
    with delivery_limit(queue):
        ids = broker.publish_many(queue, 2 * DEFAULT_DELIVERY_LIMIT + 20)
        ledger.wait_for_ids(ids, timeout=240)
        wait_for(lambda: broker.counts(queue).messages == 0, what=f"{queue} to be empty")
    _assert_each_ran(ledger, ids, 1)
    assert broker.counts(dead_letters).messages == 0
    exits = collections.Counter(w.get("last_exit") for w in _workers(daemon, "handback"))
    assert exits.get("recycled: max_memory"), exits


def test_a_dead_letter_queue_made_by_an_earlier_release_is_kept_and_looking_never_uses_it_up(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """Before it declared its dead-letter queues without a delivery limit, qsupervisor made
    them with x-queue-type alone: such a queue is used as it is (a warning says so), and
    `failed` and `retry-failed` give back what they looked at as fresh copies once it has
    been returned often."""
    queue = broker.declare("earlier")
    dead_letters = f"{queue}.failed"
    broker.channel.queue_declare(dead_letters, durable=True,
                                 arguments={"x-queue-type": "quorum"})
    daemon = daemons({"earlier": runtime_program(queue, ledger, attempts=ATTEMPTS)})
    daemon.start()
    assert daemon.status("earlier")["programs"]["earlier"]["state"] == "RUNNING"
    kept = [e for e in daemon.log_events()
            if e.get("event") == "queue kept as an earlier qsupervisor declared it"]
    assert [e["queue"] for e in kept] == [dead_letters], daemon.log_events()[-20:]
    with delivery_limit(queue, dead_letters):
        poison = _fail_messages(tmp_path, broker, queue, 2)
        _dead_lettered(broker, ledger, dead_letters, len(poison))
        for _ in range(DEFAULT_DELIVERY_LIMIT + 5):
            assert [m["id"] for m in daemon.ctl("failed", "earlier").json()["messages"]] \
                and broker.counts(dead_letters).messages == len(poison)
            moved = daemon.ctl("retry-failed", "earlier", "no-such-id", as_json=False)
            assert moved.returncode == 1 and "moved 0 messages" in moved.stdout, str(moved)
        listing = daemon.ctl("failed", "earlier").json()
        assert sorted(m["id"] for m in listing["messages"]) == sorted(poison)
        assert all(m["reason"] == "exception" for m in listing["messages"])
    _assert_each_ran(ledger, poison, ATTEMPTS)


def _workers(daemon: Any, name: str) -> list[dict[str, Any]]:
    return daemon.status(name)["programs"][name]["workers"]
