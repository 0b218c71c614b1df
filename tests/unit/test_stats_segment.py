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
