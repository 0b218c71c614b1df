"""The worker's shared counters as the master reads them: totals, the job in hand, and the
last minute's figures (each bucket counts only while it is less than a minute old)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from qsupervisor import stats_segment as stats
from qsupervisor.stats_segment import DEAD, DONE, FAILED, RETRIED, Stats


@pytest.fixture
def segment() -> Iterator[Stats]:
    fd = stats.create()
    segment = Stats(fd)
    yield segment
    segment.close()
    os.close(fd)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1_800_000_000.25)
    monkeypatch.setattr(stats.time, "time", clock.time)
    return clock


def test_totals_and_the_job_in_hand(segment: Stats) -> None:
    segment.job_started("msg-1")
    snap = segment.read()
    assert snap.job_id == "msg-1" and snap.job_started is not None
    segment.job_finished(DONE)
    segment.job_started("msg-2")
    segment.job_finished(RETRIED)
    segment.job_started("msg-3")
    segment.job_finished(DEAD)
    segment.set_held(4)
    snap = segment.read()
    assert (snap.done, snap.failed, snap.retried, snap.dead, snap.held) == (3, 2, 1, 1, 4)
    assert snap.job_id is None and snap.job_started is None


def test_last_minute_counts_fresh_buckets_only(segment: Stats, clock: Clock) -> None:
    assert segment.read().done_last_minute == 0  # never used: every bucket stale
    for _ in range(60):  # busy for a whole minute: every bucket current
        clock.now += 1
        segment.job_finished(DONE)
        segment.job_finished(FAILED)
    snap = segment.read()
    assert (snap.done_last_minute, snap.failed_last_minute, snap.retried_last_minute) == (120, 60, 0)

    clock.now += 30  # half of the buckets have aged out
    segment.job_finished(RETRIED)
    snap = segment.read()
    assert (snap.done_last_minute, snap.failed_last_minute, snap.retried_last_minute) == (61, 31, 1)

    clock.now += 61  # idle for a minute: nothing recent, totals unchanged
    snap = segment.read()
    assert (snap.done_last_minute, snap.failed_last_minute, snap.retried_last_minute) == (0, 0, 0)
    assert (snap.done, snap.failed, snap.retried) == (121, 61, 1)


def test_durations_land_in_their_bucket_and_read_cumulative(
        segment: Stats, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(stats.time, "monotonic", lambda: now[0])
    for seconds, outcome in ((0.0005, DONE), (0.001, DONE), (0.3, RETRIED), (400.0, DEAD)):
        now[0] = 0.0
        segment.job_started("m")
        now[0] = seconds
        segment.job_finished(outcome)
    totals = segment.totals()
    assert (totals.finished, totals.failed, totals.retried, totals.dead) == (4, 2, 1, 1)
    assert totals.timed_out == 0
    assert totals.seconds == pytest.approx(400.3015)
    bounds = stats.DURATION_BUCKETS
    # Le semantics: 1 ms exactly is in the 1 ms bucket, as Prometheus counts `le`.
    assert totals.buckets[0] == 2
    assert totals.buckets[bounds.index(0.5)] == 1
    assert totals.buckets[-1] == 1  # past the last bound: only +Inf
    cumulative = stats.cumulative(totals.buckets)
    assert cumulative[0] == 2 and cumulative[bounds.index(0.25)] == 2
    assert cumulative[bounds.index(0.5)] == 3 and cumulative[-1] == 4
    assert all(a <= b for a, b in zip(cumulative, cumulative[1:]))


def test_timed_out_jobs_are_failures_and_counted_apart(segment: Stats) -> None:
    segment.job_started("m")
    segment.job_finished(RETRIED, timed_out=True)
    segment.job_finished(DEAD)  # an earlier run was lost: no start, no duration
    totals = segment.totals()
    assert (totals.finished, totals.failed, totals.timed_out) == (2, 2, 1)
    assert sum(totals.buckets) == 1


def test_add_totals() -> None:
    one = stats.Totals(3, 1, 1, 0, 0, (1,) + (0,) * len(stats.DURATION_BUCKETS), 0.5)
    both = stats.add_totals(one, one)
    assert both.finished == 6 and both.buckets[0] == 2 and both.seconds == 1.0
    assert stats.add_totals(stats.EMPTY_TOTALS, one) == one
