"""Delayed messages through the delay chain: never early, late by at most the bound,
whatever order they were published in. (Surviving a broker outage: in the fault suite,
tests/faults/test_broker_outage.py, on a RabbitMQ node of its own.)"""

from __future__ import annotations

import statistics
import time

import qsupervisor

from .daemon import MakeDaemon
from .harness import BROKER_URL, Ledger, runtime_program
from .rabbit import Broker

RESOLUTION = 0.1  # the daemon's delay.resolution (the default)
MARGIN = 1.0  # generous: the bound is about correctness (it did arrive when due), not speed
DELAYS = [10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.7, 0.5]  # longest first


def lateness_report(label: str, lateness: list[float]) -> str:
    ordered = sorted(lateness)
    return (f"{label}: {len(ordered)} messages, lateness p50 "
            f"{statistics.median(ordered) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms")


def test_delayed_messages_published_longest_first_each_run_when_due_within_the_bound(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("delays")
    daemon = daemons({"delays": runtime_program(queue, ledger, workers=2)})
    daemon.start()

    # (earliest allowed start, latest allowed start) of each message, by id.
    windows: dict[str, tuple[float, float]] = {}
    for delay in DELAYS:
        before = time.time()
        msg_id = qsupervisor.publish(queue, {"tag": f"delay {delay:g}"}, delay=delay,
                                     broker=BROKER_URL)
        windows[msg_id] = (before + delay, time.time() + delay + RESOLUTION + MARGIN)
    # And through qsupervisorctl, which reads the broker and the names from the config.
    for text, delay in (("1.2s", 1.2), ("2s", 2.0)):
        before = time.time()
        result = daemon.ctl("publish", "delays", '{"tag": "ctl"}', "--delay", text,
                            as_json=False)
        assert result.returncode == 0, str(result)
        windows[result.stdout.strip()] = (before + delay,
                                          time.time() + delay + RESOLUTION + MARGIN)

    entries = ledger.wait_for_ids(windows, timeout=max(DELAYS) + 30)

    assert sorted(e["id"] for e in entries) == sorted(windows), "a message ran twice"
    lateness = []
    for entry in entries:
        earliest, latest = windows[entry["id"]]
        assert entry["t"] >= earliest, f"{entry['tag']} ran {earliest - entry['t']:.3f}s early"
        assert entry["t"] <= latest, f"{entry['tag']} ran {entry['t'] - latest:.3f}s late"
        lateness.append(entry["t"] - entry["due"] / 1000)
    print("\n" + lateness_report("delays 0.5-10 s published longest first", lateness))
