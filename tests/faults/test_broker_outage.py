"""The broker goes away mid-run and comes back, two ways: `rabbitmqctl stop_app` /
`start_app` (the VM stays up, every connection is closed), and kill -9 of the node's Erlang
VM followed by a restart (no goodbye: sockets just die). Either way the same workers
reconnect by themselves (a lost broker is not a crash), nothing is lost, and delayed
messages that fell due during the outage, or after it, arrive, none early.

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
    Account,
    FaultLedger,
    MakeDaemon,
    NodeBroker,
    account,
    flow_program,
    report,
)

WORKERS, PREFETCH = 2, 5
FLOW = 1_000
DELAYS = (2.0, 5.0, 15.0)  # seconds: due during the outage, about at its end, after it


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


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_workers_reconnect_after_a_broker_outage_and_lose_nothing_delayed_messages_included(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode, outage: str) -> None:
    node = up_single_node
    queue = broker.declare(f"outage-{outage}")
    daemon = daemons({"flow": flow_program(queue, ledger, workers=WORKERS,
                                           prefetch=PREFETCH)}, broker=node.url)
    daemon.start()
    pids = worker_pids(daemon.status(), "flow")

    earliest: dict[str, float] = {}
    for delay in DELAYS:
        before = time.time()
        msg_id = qsupervisor.publish(queue, {"delay": delay}, delay=delay, broker=node.url)
        earliest[msg_id] = before + delay
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
    published += list(earliest)

    def settled() -> Account | None:
        now = account(published, ledger.runs())
        return now if now.settled() else None

    final = wait_for(settled, timeout=RECOVERY + max(DELAYS), interval=0.5,
                     what=lambda: f"every message handled: {account(published, ledger.runs())}; "
                                  f"delayed: {list(earliest)}; the node's queues: "
                                  f"{node.ctl('-q', 'list_queues', 'name', 'messages')}")
    late = delayed_lateness(ledger.entries(), earliest)
    report(f"broker-{outage}", final, workers=WORKERS, prefetch=PREFETCH,
           handled_before_back=handled_during, seconds_broker_down=outage_seconds,
           seconds_until_consuming=back_after, delayed=len(earliest),
           delayed_ms_after_due=",".join(f"{ms:.0f}" for ms in late))
    assert final.lost == 0, final.missing
    assert all(ms >= 0 for ms in late), f"a delayed message ran early: {late}"
    # A duplicate is a message whose ack was in flight when the connection dropped: the
    # broker redelivers it; at most what the workers held.
    seen: set[str] = set()
    for entry in ledger.entries():
        if entry["id"] in seen:
            assert entry["redelivered"] or entry["attempt"] > 1, entry
        seen.add(entry["id"])
    assert final.duplicates <= WORKERS * PREFETCH, final
    wait_for(lambda: broker.counts(queue)[0] == 0, what="the queue to be empty")


def delayed_lateness(entries: list[dict[str, Any]], earliest: dict[str, float]) -> list[float]:
    """For each delayed message, in publishing order: ms between its due time and its
    first run (negative: it ran early)."""
    first: dict[str, float] = {}
    for entry in entries:
        if entry["id"] in earliest:
            first.setdefault(entry["id"], entry["t"])
    return [(first[i] - earliest[i]) * 1000 for i in earliest]
