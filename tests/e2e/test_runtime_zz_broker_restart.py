"""The broker goes away and comes back (`rabbitmqctl stop_app` / `start_app`): workers
reconnect by themselves, without being counted as crashes, and nothing is lost, delayed
messages included.

These tests restart the RabbitMQ application that every test uses, so they are marked
to run after the others (conftest.py sorts them last); the `restart_broker` fixture
starts the broker again even if a test fails half-way.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

import pytest

import qsupervisor

from .daemon import MakeDaemon, worker_pids
from .harness import BROKER_URL, Ledger, runtime_program, wait_for
from .rabbit import Broker

pytestmark = pytest.mark.broker_restart

RECOVERY = 90.0  # seconds: a deadline for the broker and the workers to be back


def reconnected(daemon: Any, name: str, pids: dict[int, int], broker: Broker,
                queue: str) -> None:
    """Wait until the same workers (no restart: a lost broker is not a crash) consume
    again, status showing no broker error."""

    def back() -> bool:
        program = daemon.status(name)["programs"][name]
        return (worker_pids({"programs": {name: program}}, name) == pids
                and all(w["state"] == "RUNNING" and w["broker_error"] is None
                        and w["restarts"] == 0 for w in program["workers"])
                and broker.counts(queue).consumers == len(pids))

    wait_for(back, timeout=RECOVERY,
             what=lambda: f"workers {pids} consuming again: {daemon.status(name)}")
    log = daemon.program_log(name)
    assert log.count("broker connection lost") >= len(pids), log
    assert log.count("reconnected to the broker") >= len(pids), log


def test_a_delayed_message_survives_a_broker_restart(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger,
        restart_broker: Callable[[], None]) -> None:
    queue = broker.declare("restart-delay")
    daemon = daemons({"restart": runtime_program(queue, ledger, workers=2)})
    daemon.start()
    pids = worker_pids(daemon.status(), "restart")

    earliest = {}
    for delay in (8.0, 3.0):  # due after the restart, and (about) during it
        before = time.time()
        msg_id = qsupervisor.publish(queue, {"tag": f"delay {delay:g}"}, delay=delay,
                                     broker=BROKER_URL)
        earliest[msg_id] = before + delay
    restart_broker()

    reconnected(daemon, "restart", pids, broker, queue)
    for entry in ledger.wait_for_ids(earliest, timeout=RECOVERY):
        assert entry["t"] >= earliest[entry["id"]], f"{entry['tag']} ran early"
        print(f"\n{entry['tag']} after a broker restart: "
              f"{(entry['t'] - earliest[entry['id']]) * 1000:.0f} ms after due")
    assert all(n == 1 for n in ledger.counts().values()), ledger.counts()


def test_a_broker_restart_while_messages_flow_loses_nothing(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger,
        restart_broker: Callable[[], None]) -> None:
    queue = broker.declare("restart-flow")
    daemon = daemons({"flow": runtime_program(queue, ledger, workers=2, prefetch=5)})
    daemon.start()
    pids = worker_pids(daemon.status(), "flow")

    ids = broker.publish_batch(queue, ({"sleep": 0.02, "n": n} for n in range(300)))
    wait_for(lambda: len(ledger.entries()) >= 50, what="the first jobs to run")
    restart_broker()
    handled_before_restart = len(ledger.entries())
    reconnected(daemon, "flow", pids, broker, queue)
    ids += broker.publish_batch(queue, ({"n": n} for n in range(300, 400)))

    ledger.wait_for_ids(ids, timeout=RECOVERY)
    counts = collections.Counter(e["id"] for e in ledger.entries())
    assert set(counts) == set(ids)
    twice = [i for i, n in counts.items() if n > 1]
    # A duplicate is a message whose job was running, or finished with its ack not yet
    # sent, when the connection dropped: the broker redelivers it (at-least-once). A
    # worker that saw its outcome lost told the master, so the redelivery counts that run
    # as a failed attempt and the message runs again as its retry (attempt 2); one whose
    # loss went unseen runs again as a redelivery.
    entries = ledger.entries()
    redelivered = {e["id"] for e in entries if e["redelivered"]}
    retried = {e["id"] for e in entries if e["attempt"] == 2}
    assert set(twice) <= redelivered | retried, twice
    log = daemon.program_log("flow")
    assert all(f'"message_id": "{i}"' in log and "lost with the broker connection" in log
               for i in retried), (retried, log)
    assert len(twice) <= 2 * 5, twice  # at most what two workers held, prefetch 5 each
    print(f"\n{len(ids)} messages, {handled_before_restart} handled before the broker was "
          f"back, {len(twice)} ran twice")
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")
