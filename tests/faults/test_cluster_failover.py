"""A 3-node cluster and a quorum queue: the node the workers are connected to stops
mid-run; they fail over to the live nodes named in `broker:` (a list of the cluster's
URLs) and nothing is lost. The seconds with no consumer are measured two ways, from
`status --json` (the program's `consuming`) and from the broker (the queue's consumer count
read on a surviving node), and reported, not asserted; so are the seconds with fewer than
all workers consuming (each worker picks its node at random, so the stopped node may hold
one worker or all of them).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from e2e.daemon import Daemon, RawClient
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

WORKERS, PREFETCH = 3, 5
MESSAGES = 3_000
SAMPLE_EVERY = 0.1  # seconds: a sampling rate, not a wait for a condition


def port_of(url: str | None) -> int | None:
    return urlsplit(url).port if url else None


class Sampler:
    """Samples, in a thread, the program's consumer count as `status` reports it and the
    queue's consumer count as a surviving node reports it."""

    def __init__(self, socket_path: Path, program: str, survivor: RabbitNode,
                 queue: str) -> None:
        self.socket_path, self.program = socket_path, program
        self.survivor, self.queue = survivor, queue
        self.status: list[tuple[float, int]] = []
        self.broker: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                         for f in (self._sample_status, self._sample_broker)]

    def _guard(self, sample: Any) -> None:
        try:
            sample()
        except BaseException as exc:  # reported by __exit__ in the test's thread
            self._errors.append(exc)

    def _sample_status(self) -> None:
        client = RawClient(self.socket_path)
        request = json.dumps({"v": 1, "id": 1, "cmd": "status",
                              "args": {"names": [self.program], "queues": False}})
        try:
            while not self._stop.wait(SAMPLE_EVERY):
                client.send(request.encode() + b"\n")
                reply = client.reply()
                consuming = reply["result"]["programs"][self.program]["consuming"]
                self.status.append((time.monotonic(), int(consuming)))
        finally:
            client.close()

    def _sample_broker(self) -> None:
        broker = NodeBroker(self.survivor.url)
        try:
            while not self._stop.wait(SAMPLE_EVERY):
                self.broker.append((time.monotonic(), broker.counts(self.queue)[1]))
        finally:
            broker.close_connection()

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        if self._errors:
            raise self._errors[0]


def seconds_below(samples: Sequence[tuple[float, int]], since: float, count: int) -> float:
    """Time between consecutive samples taken after `since` during which fewer than
    `count` consumed."""
    later = [s for s in samples if s[0] >= since]
    return sum(b[0] - a[0] for a, b in zip(later, later[1:]) if a[1] < count)


def consuming_on(daemon: Daemon, name: str, not_on: int | None = None) -> list[int] | None:
    """The port of the node each worker consumes on, once every worker consumes (and none
    on the port `not_on`); None until then."""
    workers = daemon.status(name)["programs"][name]["workers"]
    ports = [port_of(w["node"]) if w["consuming"] else None for w in workers]
    if not ports or None in ports or not_on in ports:
        return None
    return [port for port in ports if port is not None]


def test_workers_fail_over_to_a_live_node_when_theirs_stops_and_lose_nothing(
        daemons: MakeDaemon, cluster: list[RabbitNode], ledger: FaultLedger) -> None:
    setup = NodeBroker(cluster[0].url)
    queue = setup.declare("failover")
    daemon = daemons({"flow": flow_program(queue, ledger, workers=WORKERS, prefetch=PREFETCH)},
                     broker=[node.url for node in cluster])
    daemon.start()
    ports = wait_for(lambda: consuming_on(daemon, "flow"),
                     what=lambda: f"every worker consuming on a node: {daemon.status('flow')}")
    victim = next(node for node in cluster if node.port == ports[0])
    survivor = next(node for node in cluster if node is not victim)
    setup.close_connection()
    broker = NodeBroker(survivor.url)
    broker.queues.append(queue)
    try:
        published = broker.publish_batch(queue, ({"n": n, "sleep": 0.005}
                                                 for n in range(MESSAGES)))
        wait_for(lambda: sum(ledger.runs().values()) >= MESSAGES // 10, interval=0.2,
                 what="the first jobs to run")
        with Sampler(daemon.socket, "flow", survivor, queue) as sampler:
            stopped_at = time.monotonic()
            victim.stop_app()
            wait_for(lambda: consuming_on(daemon, "flow", not_on=victim.port),
                             timeout=RECOVERY, interval=0.2,
                             what=lambda: f"every worker consuming on a live node: "
                                          f"{daemon.status('flow')}")
            failover = time.monotonic() - stopped_at

            def settled() -> Account | None:
                now = account(published, ledger.runs())
                return now if now.settled() else None

            final = wait_for(settled, timeout=RECOVERY, interval=0.5,
                             what=lambda: f"every message handled: "
                                          f"{account(published, ledger.runs())}")
        report("cluster-failover", final, workers=WORKERS, prefetch=PREFETCH,
               stopped_node=victim.node, workers_on_it=ports.count(victim.port),
               seconds_until_all_consuming=failover,
               seconds_zero_consumers_status=seconds_below(sampler.status, stopped_at, 1),
               seconds_zero_consumers_broker=seconds_below(sampler.broker, stopped_at, 1),
               seconds_degraded_status=seconds_below(sampler.status, stopped_at, WORKERS))
        assert final.lost == 0, final.missing[:10]
        seen: set[str] = set()
        for entry in ledger.entries():
            if entry["id"] in seen:
                assert entry["redelivered"] or entry["attempt"] > 1, entry
            seen.add(entry["id"])
        assert daemon.status("flow")["programs"]["flow"]["consuming"] == WORKERS
    finally:
        victim.start_app()
        broker.close()
