"""The broker goes away mid-run and comes back, two ways: `rabbitmqctl stop_app` /
`start_app` (the VM stays up, every connection is closed), and kill -9 of the node's Erlang
VM followed by a restart (no goodbye: sockets just die). Either way the same workers
reconnect by themselves (a lost broker is not a crash) and nothing is lost; delayed
messages that fall due during the outage, and after it, arrive, none early.

The delayed messages have a scenario of their own, published just before the outage with
delays of one chain level each (2**k units: no hop from level to level is due while the
node stops), so that what they prove does not depend on when the outage starts.

(These scenarios used to restart the machine's own RabbitMQ in tests/e2e; they run on the
suite's node now.)
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
from e2e.daemon import Daemon, worker_pids
from e2e.harness import wait_for

import qsupervisor

from .nodes import RabbitNode
from .support import (
    RECOVERY,
    FaultLedger,
    MakeDaemon,
    NodeBroker,
    flow_program,
    report,
    settle,
)

WORKERS, PREFETCH = 2, 5
FLOW = 1_000
# Seconds, each 2**k units of the default 0.1 s resolution (one level of the chain): due
# during either outage (each lasts more than 3 s here), and after it.
DELAYS = (1.6, 3.2, 12.8)
DELAYED_GRACE = 30.0


def stop_and_start_app(node: RabbitNode) -> None:
    node.stop_app()
    node.start_app()


def kill_vm_and_restart(node: RabbitNode) -> None:
    node.kill_vm()
    node.start()


OUTAGES: dict[str, Callable[[RabbitNode], None]] = {
    "stop_app": stop_and_start_app, "kill-9-vm": kill_vm_and_restart}


def reconnected(daemon: Daemon, name: str, pids: dict[int, int], broker: NodeBroker,
                queue: str) -> None:
    """Wait until the same workers (no restart) consume again, status showing no broker
    error, and the program's log saying each lost and regained its connection."""

    def back() -> bool:
        program = daemon.status(name)["programs"][name]
        return (worker_pids({"programs": {name: program}}, name) == pids
                and all(w["state"] == "RUNNING" and w["broker_error"] is None
                        and w["restarts"] == 0 for w in program["workers"])
                and broker.counts(queue)[1] == len(pids))

    wait_for(back, timeout=RECOVERY, interval=0.5,
             what=lambda: f"workers {pids} consuming again: {daemon.status(name)}")
    log = daemon.program_log(name)
    assert log.count("broker connection lost") >= len(pids), log
    assert log.count("reconnected to the broker") >= len(pids), log


def outage_daemon(daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
                  node: RabbitNode, label: str) -> tuple[Daemon, str, dict[int, int]]:
    queue = broker.declare(label)
    daemon = daemons({"flow": flow_program(queue, ledger, workers=WORKERS,
                                           prefetch=PREFETCH)}, broker=node.url)
    daemon.start()
    return daemon, queue, worker_pids(daemon.status(), "flow")


def queue_depths(node: RabbitNode) -> str:
    """Where messages are on the node: the queues that hold any."""
    listing = node.ctl("-q", "list_queues", "name", "messages")
    held = [line for line in listing.splitlines()[1:] if not line.endswith("\t0")]
    return "; ".join(held) or "every queue empty"


def assert_duplicates_are_redeliveries(ledger: FaultLedger) -> None:
    """A message runs twice only because the broker redelivered it: its ack was in flight
    when the connection dropped."""
    seen: set[str] = set()
    for entry in ledger.entries():
        if entry["id"] in seen:
            assert entry["redelivered"] or entry["attempt"] > 1, entry
        seen.add(entry["id"])


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_workers_reconnect_after_a_broker_outage_mid_run_and_lose_nothing(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode, outage: str) -> None:
    node = up_single_node
    daemon, queue, pids = outage_daemon(daemons, broker, ledger, node, f"outage-{outage}")
    published = broker.publish_batch(queue, ({"n": n, "sleep": 0.01} for n in range(FLOW)))
    wait_for(lambda: sum(ledger.runs().values()) >= 50, interval=0.2,
             what="the first jobs to run")

    down_at = time.monotonic()
    OUTAGES[outage](node)
    outage_seconds = time.monotonic() - down_at
    handled_during = sum(ledger.runs().values())
    broker.reconnect()
    reconnected(daemon, "flow", pids, broker, queue)
    back_after = time.monotonic() - down_at
    published += broker.publish_batch(queue, ({"n": n} for n in range(FLOW, FLOW + 200)))

    final = settle(published, ledger, RECOVERY)
    report(f"broker-{outage}", final, workers=WORKERS, prefetch=PREFETCH,
           handled_before_back=handled_during, seconds_broker_down=outage_seconds,
           seconds_until_consuming=back_after)
    assert final.lost == 0, f"{final}; the node's queues: {queue_depths(node)}"
    assert_duplicates_are_redeliveries(ledger)
    assert final.duplicates <= WORKERS * PREFETCH, final  # at most what the workers held
    # A worker that saw a job's outcome lost with its connection says so, and the message
    # comes back as its retry (attempt 2) rather than as a redelivery.
    retried = {e["id"] for e in ledger.entries() if e["attempt"] == 2}
    log = daemon.program_log("flow")
    assert all(f'"message_id": "{i}"' in log and "lost with the broker connection" in log
               for i in retried), (retried, log[-2000:])
    wait_for(lambda: broker.counts(queue)[0] == 0, what="the queue to be empty")


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_delayed_messages_due_during_a_broker_outage_arrive_after_it_none_early(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode, outage: str) -> None:
    node = up_single_node
    daemon, queue, pids = outage_daemon(daemons, broker, ledger, node, f"delays-{outage}")
    earliest: dict[str, float] = {}
    for delay in DELAYS:
        before = time.time()
        msg_id = qsupervisor.publish(queue, {"delay": delay}, delay=delay, broker=node.url)
        earliest[msg_id] = before + delay

    down_at = time.monotonic()
    OUTAGES[outage](node)
    outage_seconds = time.monotonic() - down_at
    broker.reconnect()
    reconnected(daemon, "flow", pids, broker, queue)

    # Once the workers consume again, a message due by then needs only its last hop (a
    # resolution, 0.1 s): half a minute past the last due time is generous, and keeps a lost
    # message from costing the suite three minutes.
    final = settle(list(earliest), ledger, max(DELAYS) + DELAYED_GRACE)
    late = delayed_lateness(ledger.entries(), earliest)
    report(f"delays-{outage}", final, delays=",".join(f"{d:g}" for d in DELAYS),
           seconds_broker_down=outage_seconds,
           ms_after_due=",".join(f"{ms:.0f}" for ms in late))
    assert final.lost == 0, (
        f"{final.lost} of {len(DELAYS)} delayed messages lost; the node's queues: "
        f"{queue_depths(node)}")
    assert all(ms >= 0 for ms in late), f"a delayed message ran early: {late}"
    # Duplicates are reported, not refused: a hop of the chain that the outage interrupts
    # may deliver a message twice (at-least-once), and handlers are idempotent.


def delayed_lateness(entries: list[dict[str, Any]], earliest: dict[str, float]) -> list[float]:
    """For each delayed message that ran, in publishing order: ms between its due time and
    the end of its first run (negative: it ran early)."""
    first: dict[str, float] = {}
    for entry in entries:
        if entry["id"] in earliest:
            first.setdefault(entry["id"], entry["t"])
    return [(first[i] - earliest[i]) * 1000 for i in earliest if i in first]
