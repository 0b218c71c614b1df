"""The autoscaler's rule (master/autoscale.py) on a fake clock: up fast in steps that grow
with the excess wait, down one step after a cooldown, a band where the count holds, an
unknown reading holds, and two hosts on one queue share a backlog."""

from __future__ import annotations

import dataclasses
import math

from qsupervisor.config.model import Autoscale
from qsupervisor.master.autoscale import Bounds, Inputs, Window, decide, estimated_wait

SETTINGS = Autoscale()  # target_wait 10 s, cooldowns 6 s up and 60 s down
BOUNDS = Bounds(1, 6)


def inputs(**kw: object) -> Inputs:
    values: dict[str, object] = dict(current=3, consuming=3, idle=0, ready=0, consumers=3,
                                     per_worker=10.0, utilisation=1.0)
    values.update(kw)
    return Inputs(**values)  # type: ignore[arg-type]


def test_the_wait_is_ready_over_the_rate_and_infinite_without_one() -> None:
    assert estimated_wait(600, 60.0) == 10.0
    assert estimated_wait(0, None) == 0.0
    assert estimated_wait(5, None) == math.inf


def test_up_in_a_step_that_grows_with_the_excess() -> None:
    # 3 workers at 10 jobs/s: 30 jobs/s; 1,230 ready wait 41 s, four times the target.
    decision = decide(inputs(ready=1230), Bounds(1, 20), SETTINGS, 100.0, None)
    assert (decision.direction, decision.before, decision.after) == ("up", 3, 13)
    assert decision.text == "up 3→13: wait 41s > 10s (ready 1,230, 30 jobs/s, 3 consumers)"
    smaller = decide(inputs(ready=450), Bounds(1, 20), SETTINGS, 100.0, None)
    assert smaller.after == 5  # 15 s: 1.5 times


def test_up_stops_at_max_and_at_step_up() -> None:
    assert decide(inputs(ready=100_000), BOUNDS, SETTINGS, 0.0, None).after == 6
    limited = dataclasses.replace(SETTINGS, step_up=2)
    assert decide(inputs(ready=100_000), Bounds(1, 50), limited, 0.0, None).after == 5
    at_max = decide(inputs(current=6, consuming=6, ready=100_000), BOUNDS, SETTINGS, 0.0, None)
    assert (at_max.direction, at_max.after) == ("hold", 6)
    assert "at max 6" in at_max.reason


def test_no_more_workers_than_ready_messages() -> None:
    # Slow jobs (one a minute): 2 ready would wait 60 s, but 2 more workers take them all.
    decision = decide(inputs(current=1, consuming=1, ready=2, consumers=1, per_worker=1 / 60),
                      Bounds(1, 20), SETTINGS, 0.0, None)
    assert decision.after == 3


def test_no_rate_yet_doubles() -> None:
    decision = decide(inputs(current=2, consuming=2, ready=500, per_worker=None, consumers=2),
                      BOUNDS, SETTINGS, 0.0, None)
    assert (decision.after, decision.wait) == (4, math.inf)
    assert "wait ∞ > 10s" in decision.text


def test_up_waits_for_its_cooldown() -> None:
    held = decide(inputs(ready=1230), BOUNDS, SETTINGS, 105.0, 100.0)
    assert (held.direction, held.after) == ("hold", 3)
    assert "up cooldown" in held.reason
    assert decide(inputs(ready=1230), BOUNDS, SETTINGS, 106.0, 100.0).direction == "up"


def test_unknown_reading_holds_and_says_so() -> None:
    decision = decide(inputs(ready=None, consumers=None, unknown="connection refused"),
                      BOUNDS, SETTINGS, 0.0, None)
    assert (decision.direction, decision.after) == ("hold", 3)
    assert decision.text == "hold 3: queue reading unknown (connection refused) (30 jobs/s)"


def test_the_band_holds() -> None:
    # 60 ready at 30 jobs/s: 2 s, between 1 s (down_below 0.1) and 10 s.
    decision = decide(inputs(ready=60, idle=2, utilisation=0.1), BOUNDS, SETTINGS, 500.0, None)
    assert (decision.direction, decision.after) == ("hold", 3)
    assert "within 1s..10s" in decision.reason


def test_down_one_step_when_idle_empty_and_cooled_down() -> None:
    quiet = inputs(ready=0, idle=3, utilisation=0.0)
    assert decide(quiet, BOUNDS, SETTINGS, 159.0, 100.0).direction == "hold"
    decision = decide(quiet, BOUNDS, SETTINGS, 160.0, 100.0)
    assert (decision.direction, decision.after) == ("down", 2)
    assert decide(inputs(current=1, consuming=1, idle=1), BOUNDS, SETTINGS, 999.0,
                  None).direction == "hold"


def test_down_never_without_an_idle_worker_nor_past_the_utilisation() -> None:
    assert decide(inputs(idle=0, utilisation=0.2), BOUNDS, SETTINGS, 999.0,
                  None).direction == "hold"
    # 3 workers 60 % busy: 2 would be 90 % busy, over 75 %.
    busy = decide(inputs(idle=1, utilisation=0.6), BOUNDS, SETTINGS, 999.0, None)
    assert busy.direction == "hold" and "90% busy > 75%" in busy.reason
    assert decide(inputs(idle=1, utilisation=0.4), BOUNDS, SETTINGS, 999.0,
                  None).after == 2


def test_a_crashed_slot_is_no_spare_room_and_no_capacity() -> None:
    # 4 slots, one backing off: the 3 consuming are multiplied; the 4th stays counted.
    decision = decide(inputs(current=4, consuming=3, ready=1230), Bounds(1, 20), SETTINGS,
                      0.0, None)
    assert decision.after == 14
    assert decide(inputs(current=4, consuming=3, idle=0, utilisation=0.0), BOUNDS, SETTINGS,
                  999.0, None).direction == "hold"


def test_bounds_apply_at_once() -> None:
    assert decide(inputs(current=8, consuming=8), BOUNDS, SETTINGS, 0.0, 0.0).after == 6
    assert decide(inputs(current=0, consuming=0), Bounds(2, 6), SETTINGS, 0.0, 0.0).after == 2


def test_two_hosts_share_a_backlog_one_host_at_max_clears() -> None:
    # One worker each on two hosts, 10 jobs/s per worker. 540 ready: one host at max (6
    # workers, 60 jobs/s) clears them in 9 s, within target_wait. Each host sees 2
    # consumers and takes its share: neither goes to max, together they stay under 6+1.
    host = inputs(current=1, consuming=1, ready=540, consumers=2)
    a = decide(host, BOUNDS, SETTINGS, 0.0, None)
    b = decide(host, BOUNDS, SETTINGS, 0.0, None)
    assert a.after < 6 and b.after < 6
    assert a.after + b.after <= 7
    # The next reading sees both hosts' consumers and holds.
    later = inputs(current=a.after, consuming=a.after, ready=300, consumers=a.after + b.after)
    assert decide(later, BOUNDS, SETTINGS, 10.0, 0.0).direction == "hold"


def test_steady_load_does_not_flap() -> None:
    # 12 jobs/s of 100 ms jobs (1.2 workers' worth), held for ten minutes, from 6 workers:
    # the count only goes down, and stops where the workers left stay under 75 % busy.
    current, last, directions = 6, None, []
    for tick in range(300):
        now = tick * 2.0
        utilisation = min(1.0, 1.2 / current)
        ready = 0 if utilisation < 0.9 else 30
        decision = decide(inputs(current=current, consuming=current, ready=ready,
                                 consumers=current, idle=max(0, current - 2),
                                 utilisation=utilisation), BOUNDS, SETTINGS, now, last)
        if decision.after != current:
            directions.append(decision.direction)
            current, last = decision.after, now
    assert directions and set(directions) == {"down"}
    assert current == 2  # 1.2 / 2 = 60 % busy; 1 worker would be 120 %


def test_window_reads_the_rate_per_busy_worker_and_the_busy_share() -> None:
    window = Window()
    assert window.per_worker is None and window.utilisation() is None
    window.add(0.0, 0, 0.0, 2, 20.0)
    window.add(2.0, 20, 2.0, 2, 20.0)  # 20 jobs of 100 ms in 2 s on 2 workers
    assert window.per_worker == 10.0
    assert window.utilisation() == 0.5
    for t in range(4, 40, 2):  # quiet: the rate is kept, the busy share falls to 0
        window.add(float(t), 20, 2.0, 2, 20.0)
    assert window.per_worker == 10.0
    assert window.utilisation() == 0.0
