"""kill -9 of the master mid-run: its leaders and workers die with it (PR_SET_PDEATHSIG, and
end of file on their channels), and qsupervisord started again on the same configuration
(stale pidfile and socket) takes over; no message is lost."""

from __future__ import annotations

import os
import signal
import time

from e2e.harness import DEADLINE, STOP_TIMEOUT, alive, wait_for

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

MESSAGES = 3_000
WORKERS = 3


def test_a_killed_masters_tree_exits_and_a_restarted_daemon_handles_every_message(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode) -> None:
    queue = broker.declare("master")
    daemon = daemons({"flow": flow_program(queue, ledger, workers=WORKERS, prefetch=5)},
                     broker=up_single_node.url)
    daemon.start()
    published = broker.publish_batch(queue, ({"n": n, "sleep": 0.005}
                                             for n in range(MESSAGES)))
    wait_for(lambda: sum(ledger.runs().values()) >= MESSAGES // 10, interval=0.2,
             what="the first jobs to run")

    old_tree = daemon.tree_pids()
    master = daemon.master_pid()
    assert len(old_tree) == 1 + 1 + 1 + WORKERS, old_tree  # master, herald, leader, workers
    killed_at = time.monotonic()
    os.kill(master, signal.SIGKILL)
    handled_before = sum(ledger.runs().values())
    wait_for(lambda: not alive(old_tree), timeout=STOP_TIMEOUT + DEADLINE,
             what=lambda: f"the old tree to exit with its master; alive: {alive(old_tree)}")
    tree_gone = time.monotonic() - killed_at
    assert daemon.proc is not None and daemon.proc.wait(DEADLINE) == -signal.SIGKILL

    daemon.start()  # the same configuration: its pidfile and socket are stale now
    assert daemon.master_pid() != master
    assert not daemon.tree_pids() & old_tree

    def settled() -> Account | None:
        now = account(published, ledger.runs())
        return now if now.settled() else None

    final = wait_for(settled, timeout=RECOVERY, interval=0.5,
                     what=lambda: f"every message handled: {account(published, ledger.runs())}")
    report("master-kill", final, workers=WORKERS, handled_before_kill=handled_before,
           seconds_old_tree_gone=tree_gone)
    assert final.lost == 0
    # A message runs twice only as a redelivery: its run ended as the tree went down,
    # before the ack reached the broker.
    seen: set[str] = set()
    for entry in ledger.entries():
        if entry["id"] in seen:
            assert entry["redelivered"] or entry["attempt"] > 1, entry
        seen.add(entry["id"])
