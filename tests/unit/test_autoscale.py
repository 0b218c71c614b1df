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
# bench/qsvbench/autoscale.py's settings, for a burst of 100 ms jobs in a 60 s window.
BENCH = dataclasses.replace(SETTINGS, target_wait=5.0, cooldown_up=4.0, cooldown_down=5.0,
                            step_down=2, window=6.0)


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


def test_no_rate_yet_doubles_and_the_measured_rate_takes_the_next_step() -> None:
    decision = decide(inputs(current=2, consuming=2, ready=500, per_worker=None, consumers=2),
                      BOUNDS, SETTINGS, 0.0, None)
    assert (decision.after, decision.wait) == (4, math.inf)
    assert "wait ∞ > 10s" in decision.text
    # One tick later, alone on the queue and every slot consuming: the rate measured by
    # then sizes the next step, with no cooldown (a burst reaches max at the 2nd reading).
    nxt = decide(inputs(current=4, consuming=4, ready=850, per_worker=10.0, consumers=4),
                 BOUNDS, SETTINGS, 2.0, 0.0)
    assert (nxt.direction, nxt.after) == ("up", 6)
    # The rate measured last is used while it is known, however old.
    known = decide(inputs(current=1, consuming=1, ready=150, per_worker=10.0, consumers=1),
                   BOUNDS, SETTINGS, 0.0, None)
    assert (known.after, known.wait) == (2, 15.0)


def test_up_waits_for_its_cooldown_while_the_reading_may_not_show_the_last_change() -> None:
    # Another host's consumers on the queue (5 > our 3): the cooldown holds.
    shared = inputs(ready=2050, consumers=5)
    held = decide(shared, BOUNDS, SETTINGS, 105.0, 100.0)
    assert (held.direction, held.after) == ("hold", 3)
    assert "up cooldown" in held.reason
    assert decide(shared, BOUNDS, SETTINGS, 106.0, 100.0).direction == "up"
    # Alone, but one of our slots still starting (no consumer yet): the cooldown holds.
    starting = inputs(current=4, consuming=3, ready=1230, consumers=3)
    assert decide(starting, BOUNDS, SETTINGS, 105.0, 100.0).direction == "hold"


def test_alone_on_the_queue_with_every_slot_consuming_the_next_step_needs_no_cooldown(
        ) -> None:
    # The first step was taken on a burst still being published; 2 s later every slot
    # consumes, the broker counts no other consumer, and the reading shows a backlog 2
    # workers cannot clear in the target: up again at once.
    decision = decide(inputs(current=2, consuming=2, ready=800, consumers=2), BOUNDS,
                      SETTINGS, 102.0, 100.0)
    assert (decision.direction, decision.after) == ("up", 6)


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
    # 3 workers 40 % busy (1.2 workers' worth): 2 left would be 60 %, under 75 %: one step,
    # once the cooldown has passed.
    quiet = inputs(ready=0, idle=3, utilisation=0.4)
    assert decide(quiet, BOUNDS, SETTINGS, 159.0, 100.0).direction == "hold"
    decision = decide(quiet, BOUNDS, SETTINGS, 160.0, 100.0)
    assert (decision.direction, decision.after) == ("down", 2)
    assert decide(inputs(current=1, consuming=1, idle=1), BOUNDS, SETTINGS, 999.0,
                  None).direction == "hold"


def test_down_never_more_than_step_down_however_quiet() -> None:
    # 6 workers, nothing busy over the window, the queue empty, all idle: one step of
    # step_down each time, whatever the room below.
    quiet = inputs(current=6, consuming=6, idle=6, ready=0, consumers=6, utilisation=0.0,
                   busy=0.0)
    assert decide(quiet, BOUNDS, SETTINGS, 999.0, None).after == 5
    two = dataclasses.replace(SETTINGS, step_down=2)
    assert decide(quiet, BOUNDS, two, 999.0, None).after == 4
    # Never a busy worker: with 1 idle of 6, a step of 2 takes that one only.
    assert decide(dataclasses.replace(quiet, idle=1), BOUNDS, two, 999.0, None).after == 5
    # Nor past min.
    assert decide(dataclasses.replace(quiet, current=2, consuming=2, idle=2), BOUNDS, two,
                  999.0, None).after == 1
    # And the cooldown applies.
    assert decide(quiet, BOUNDS, two, 159.0, 100.0).direction == "hold"


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


def test_window_reads_the_average_busy_workers() -> None:
    window = Window()
    assert window.busy_workers() is None
    window.add(0.0, 0, 0.0, 6, 20.0)
    window.add(2.0, 60, 6.0, 6, 20.0)  # 60 jobs of 100 ms in 2 s: 3 workers' worth
    assert window.busy_workers() == 3.0
    window.add(4.0, 60, 6.0, 3, 20.0)
    assert window.busy_workers() == 1.5


def simulate(settings: Autoscale, arrivals: list[float], bounds: Bounds = BOUNDS,
             per_worker: float = 10.0,
             unmeasured: int = 0) -> tuple[list[str], list[int], float]:
    """A program on a fake clock, ticking every 2 s: `arrivals` jobs/s for each tick, the
    workers drain the queue at per_worker each, the rule decides on each reading. Returns
    the directions of the changes, the count at each tick and the worker-seconds."""
    current, last, ready, directions, counts, spent = bounds.min, None, 0.0, [], [], 0.0
    busy_history: list[float] = []
    for tick, rate in enumerate(arrivals):
        now = tick * 2.0
        work = ready + rate * 2.0
        done = min(work, current * per_worker * 2.0)
        ready = work - done
        busy_history.append(done / per_worker / 2.0)
        spent += current * 2.0
        recent = busy_history[-max(1, int(settings.window // 2)):]
        busy = sum(recent) / len(recent)
        decision = decide(inputs(current=current, consuming=current, consumers=current,
                                 ready=round(ready), idle=max(0, current - math.ceil(busy)),
                                 per_worker=per_worker if tick >= unmeasured else None,
                                 utilisation=busy / current,
                                 busy=busy), bounds, settings, now, last)
        if decision.after != current:
            directions.append(decision.direction)
            current, last = decision.after, now
        counts.append(current)
    return directions, counts, spent


def test_steady_load_from_min_goes_up_and_stops() -> None:
    # 24 jobs/s of 100 ms (2.4 workers' worth, 40 % of max) for ten minutes, from min:
    # up to a count that keeps up, never down again (no flapping), with the defaults and
    # with the bench's quicker settings.
    for settings in (SETTINGS, BENCH):
        for unmeasured in (0, 1):  # the first reading with and without a rate
            directions, counts, _ = simulate(settings, [24.0] * 300, unmeasured=unmeasured)
            assert directions and set(directions) == {"up"}, (settings, directions)
            assert counts[-1] >= 3


def test_a_burst_then_quiet_goes_to_max_at_once_and_back_to_min() -> None:
    # 900 jobs of 100 ms arriving over the first 2 s, then quiet, bench settings.
    directions, counts, spent = simulate(BENCH, [450.0] + [0.0] * 30)
    assert counts[0] == 6  # the first reading (a rate measured already)
    assert directions[0] == "up" and set(directions[1:]) == {"down"}
    assert counts[-1] == 1
    assert len(directions) == 4  # up, then down 6→4→2→1, step_down at a time


def test_a_burst_on_a_fresh_program_doubles_then_goes_to_max_at_the_next_reading() -> None:
    directions, counts, _ = simulate(BENCH, [450.0] + [0.0] * 30, unmeasured=1)
    assert counts[:2] == [2, 6]
    assert directions[:2] == ["up", "up"] and set(directions[2:]) == {"down"}
