"""Recycling by age and by memory: the worker leaves on purpose after the job in hand and
is replaced at once, never counted as a crash."""

from __future__ import annotations

from typing import Any

from .daemon import MakeDaemon, worker_pids
from .harness import Ledger, pid_alive, runtime_program, wait_for
from .rabbit import Broker


def slot0(daemon: Any, name: str) -> dict[str, Any]:
    return next(w for w in daemon.status(name)["programs"][name]["workers"]
                if w["slot"] == 0 and not w["draining"])


def test_max_age_recycles_an_idle_worker(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("age")
    daemon = daemons({"age": runtime_program(queue, ledger, max_age="3s")})
    daemon.start()
    first = worker_pids(daemon.status(), "age")[0]

    def recycled() -> Any:
        worker = slot0(daemon, "age")
        return worker if worker["pid"] != first and worker["state"] == "RUNNING" else None

    worker = wait_for(recycled, what=lambda: f"worker {first} recycled: {slot0(daemon, 'age')}")
    assert worker["last_exit"] == "recycled: max_age"
    assert worker["restarts"] >= 1
    assert not pid_alive(first)
    job = broker.publish(queue)
    assert ledger.entry(job)["pid"] != first


def test_max_memory_recycles_the_worker_after_the_job_that_grew_it(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("memory")
    daemon = daemons({"memory": runtime_program(queue, ledger, max_memory="50MiB")})
    daemon.start()
    first = worker_pids(daemon.status(), "memory")[0]
    # A few ordinary jobs: a worker under the limit stays.
    light = broker.publish_many(queue, 3)
    assert {e["pid"] for e in ledger.wait_for_ids(light)} == {first}

    hog = broker.publish(queue, {"hoard_mib": 100, "tag": "hog"})

    def replaced() -> Any:
        worker = slot0(daemon, "memory")
        return worker if worker["pid"] != first and worker["state"] == "RUNNING" else None

    worker = wait_for(replaced, what=lambda: f"worker {first} recycled: {slot0(daemon, 'memory')}")
    assert worker["last_exit"] == "recycled: max_memory"
    assert worker["restarts"] == 1
    runs = [e for e in ledger.entries() if e["id"] == hog]
    assert [r["pid"] for r in runs] == [first]  # it ran once, in the worker it grew
    after = broker.publish(queue)
    assert ledger.entry(after)["pid"] == worker["pid"]
    wait_for(lambda: broker.counts(queue).messages == 0, what="the queue to be empty")
