"""What the fault scenarios share: a broker client bound to one of the suite's nodes, the
ledger's accounting (published = handled once + duplicates + dead-lettered, lost = 0),
the FAULT-FIGURES lines, and the process figures of a daemon (descriptors, RSS).

The daemon under test, qsupervisorctl and the polling helpers are the end-to-end suite's
(tests/e2e/daemon.py, harness.py): the same real daemon, driven the same way.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pika
import pika.exceptions
from e2e.daemon import Daemon
from e2e.harness import STOP_TIMEOUT, Ledger
from e2e.rabbit import delete_program_queues, publish_in_transactions

APPS_DIR = Path(__file__).resolve().parent / "apps"
FLOW_HANDLER = "faultapp.handlers:work"
POISON_HANDLER = "faultapp.handlers:poison"
QUICK_BACKOFF = {"initial": "0.2s", "factor": 2, "max": "2s", "jitter": 0}
MakeDaemon = Callable[..., Daemon]  # the `daemons` fixture: (programs, broker=URL, ...) -> Daemon
RECOVERY = 180.0  # seconds for a broker or a daemon to be back; about correctness, not speed
FIGURES_LINES: list[str] = []  # every FAULT-FIGURES line of the session, for the summary


def unique_queue(label: str) -> str:
    return f"faults-{label}-{uuid.uuid4().hex[:10]}"


# -- the broker ----------------------------------------------------------------------------


class NodeBroker:
    """Publishing and counting on one node (any node of a cluster); deletes its queues,
    their dead-letter queues and delay chains at the end if the node is up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self._conn = self._connect()
        self._channel = self._open_channel()

    def _connect(self) -> pika.BlockingConnection:
        params = pika.URLParameters(self.url)
        params.heartbeat = 0  # the test's connection idles while it waits on the daemon
        return pika.BlockingConnection(params)

    def _open_channel(self) -> Any:
        channel = self._conn.channel()
        channel.confirm_delivery()  # published means the broker has it
        return channel

    @property
    def channel(self) -> Any:
        """The channel, reconnecting after the node dropped us (an outage scenario)."""
        if not self._conn.is_open:
            self._conn = self._connect()
            self._channel = self._open_channel()
        elif not self._channel.is_open:
            self._channel = self._open_channel()
        return self._channel

    def reconnect(self) -> None:
        try:
            if self._conn.is_open:
                self._conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass  # it died with the node
        self._conn = self._connect()
        self._channel = self._open_channel()

    def declare(self, label: str, queue_type: str = "quorum") -> str:
        name = unique_queue(label)
        self.queues.append(name)
        self.channel.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
        return name

    def publish_batch(self, queue: str, payloads: Iterable[dict[str, Any]],
                      batch: int = 500) -> list[str]:
        return publish_in_transactions(self._conn, queue, payloads, batch)

    def publish(self, queue: str, payload: dict[str, Any]) -> str:
        return self.publish_batch(queue, [payload])[0]

    def counts(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of `queue`."""
        ok = self.channel.queue_declare(queue, passive=True).method
        return int(ok.message_count), int(ok.consumer_count)

    def message_ids(self, queue: str, limit: int = 100_000) -> list[str]:
        """Ids of the messages in `queue`, left in it (read unacknowledged, handed back
        when the channel closes)."""
        channel = self._conn.channel()
        found: list[str] = []
        try:
            while len(found) < limit:
                method, properties, _body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                found.append(properties.message_id)
        finally:
            channel.close()
        return found

    def close_connection(self) -> None:
        """Close the connection, leaving the queues (another client deletes them)."""
        try:
            self._conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass  # it died with its node

    def close(self) -> None:
        try:
            delete_program_queues(self.channel, self.queues)
            self._conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass  # the node is down after a failed scenario; it goes with the session


# -- the ledger ----------------------------------------------------------------------------


class FaultLedger(Ledger):
    """The file faultapp's handlers append to: the end-to-end suite's ledger, with the
    counts the scenarios need."""

    def runs(self, event: str = "run") -> Counter[str]:
        return Counter(e["id"] for e in self.entries() if e["event"] == event)


@dataclass(frozen=True)
class Account:
    """Where every published message went."""

    published: int
    handled: int  # messages that ran at least once
    duplicates: int  # runs beyond the first
    dead_lettered: int  # messages in the dead-letter queue that never ran to the end
    lost: int  # neither handled nor dead-lettered
    missing: tuple[str, ...]

    def settled(self) -> bool:
        return self.lost == 0


def account(published: list[str], runs: Counter[str], dead: Iterable[str] = ()) -> Account:
    wanted = set(published)
    handled = {i for i in wanted if runs[i] > 0}
    dead_only = (set(dead) & wanted) - handled
    missing = tuple(sorted(wanted - handled - dead_only))
    return Account(published=len(wanted), handled=len(handled),
                   duplicates=sum(runs[i] - 1 for i in handled),
                   dead_lettered=len(dead_only), lost=len(missing), missing=missing)


def settle(published: list[str], ledger: FaultLedger, timeout: float,
           dead: Callable[[], Iterable[str]] = tuple) -> Account:
    """Poll until every message is accounted for or `timeout` has passed, and return the
    account as it then stands: the caller reports its figures, then asserts lost == 0
    (so a scenario that loses messages still prints what it measured)."""
    deadline = time.monotonic() + timeout
    while True:
        now = account(published, ledger.runs(), dead())
        if now.settled() or time.monotonic() >= deadline:
            return now
        time.sleep(0.5)


def report(scenario: str, account: Account | None = None, **figures: Any) -> str:
    """Print (and keep for the session's summary) one FAULT-FIGURES line."""
    values: dict[str, Any] = {}
    if account is not None:
        values.update(published=account.published, handled=account.handled,
                      duplicates=account.duplicates, lost=account.lost,
                      dead_lettered=account.dead_lettered)
    values.update(figures)
    line = "FAULT-FIGURES scenario=" + scenario + "".join(
        f" {key}={_show(value)}" for key, value in values.items())
    print("\n" + line, flush=True)
    FIGURES_LINES.append(line)
    return line


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# -- processes -----------------------------------------------------------------------------


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def flow_program(queue: str, ledger: FaultLedger, **settings: Any) -> dict[str, Any]:
    """A program of the suite: faultapp's handler, its ledger, quick retries."""
    environment = {"FAULT_LEDGER": str(ledger.path)}
    program: dict[str, Any] = {"handler": FLOW_HANDLER, "queue": queue, "workers": 2,
                               "stop_timeout": f"{STOP_TIMEOUT:g}s",
                               "backoff": dict(QUICK_BACKOFF), "environment": environment}
    program.update(settings)
    return program
