"""Workers SIGKILLed at random, about every 0.3 s, while 10,000 messages flow: every message
is accounted for (handled, or dead-lettered after `attempts` crashes), none lost; the
messages that ran twice are redeliveries of jobs whose worker died before its ack left.

Nothing here depends on how fast slots come back after a crash (backoff grows with each
one): the storm lasts a bounded time and the run only has to finish within a generous
deadline.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

from e2e.daemon import Daemon
from e2e.harness import wait_for

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

MESSAGES = 10_000
JOB = 0.003  # seconds per job: the run lasts long enough for the storm to hit every slot
KILL_EVERY = 0.3  # seconds between kills: a rate of faults, not a wait for a condition
STORM = 20.0  # seconds of killing at most; the rest of the run drains in peace
WORKERS = 4


def children(pid: int) -> list[int]:
    """The live children of `pid` (a leader's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


class Killer:
    """SIGKILLs a random worker of the leader every KILL_EVERY seconds, in a thread, until
    stopped or STORM has passed."""

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._rng = random.Random(11)
        self._thread = threading.Thread(target=self._run, name="worker-killer", daemon=True)

    def _run(self) -> None:
        ends = time.monotonic() + STORM
        while not self._stop.wait(KILL_EVERY) and time.monotonic() < ends:
            workers = children(self.leader)
            if workers:
                victim = self._rng.choice(workers)
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append(victim)
                except ProcessLookupError:
                    pass  # it exited between the listing and the kill

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(KILL_EVERY + 10)


def dead_letters(broker: NodeBroker, queue: str) -> list[str]:
    return broker.message_ids(f"{queue}.failed")


def test_random_worker_kills_during_10000_messages_lose_none_and_duplicates_are_redeliveries(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode) -> None:
    queue = broker.declare("kills")
    daemon: Daemon = daemons({"kills": flow_program(queue, ledger, workers=WORKERS,
                                                    prefetch=5)},
                             broker=up_single_node.url)
    daemon.start()
    leader = int(daemon.status("kills")["programs"]["kills"]["leader_pid"])
    started = time.monotonic()
    published = broker.publish_batch(queue, ({"n": n, "sleep": JOB} for n in range(MESSAGES)))

    def settled() -> Account | None:
        now = account(published, ledger.runs(), dead_letters(broker, queue))
        return now if now.settled() else None

    with Killer(leader) as killer:
        final = wait_for(settled, timeout=RECOVERY + STORM, interval=0.5,
                         what=lambda: "every message handled or dead-lettered: "
                                      f"{account(published, ledger.runs(), dead_letters(broker, queue))}")
    elapsed = time.monotonic() - started
    report("worker-kills", final, workers=WORKERS, prefetch=5, kills=len(killer.killed),
           seconds=elapsed)

    assert killer.killed, "the storm killed no worker: nothing was proven"
    assert final.lost == 0, final.missing[:10]
    # A message runs again only because the broker redelivered it: its worker died
    # between the handler's end and the ack (or with it prefetched).
    first_run: set[str] = set()
    for entry in ledger.entries():
        if entry["id"] in first_run:
            assert entry["redelivered"] or entry["attempt"] > 1, entry
        first_run.add(entry["id"])
    wait_for(lambda: broker.counts(queue)[0] == 0, what="the queue to be empty")
