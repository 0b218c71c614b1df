"""A worker's live counters, in a small shared-memory segment the master can read.

The master wants each worker's job count and current job for `status`, but must not be
woken for that on every job: at thousands of jobs per second the events would cost more
than the jobs. So the worker writes into a memfd the master also maps, and the master
reads it only when someone asks (or when the worker dies, to learn which message it was
running). A torn read can only show a slightly stale value.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time
from bisect import bisect_left
from itertools import accumulate, compress
from typing import Any, NamedTuple

# done, failed, retried, dead-lettered, held (received, not settled), job start, id length
_HEADER = struct.Struct("<QQQQIdH")
# The newest bucket's second: a worker idle for a minute is answered without the ring.
_NEWEST = struct.Struct("<I")
_NEWEST_OFFSET = 56
assert _HEADER.size <= _NEWEST_OFFSET
_ID_OFFSET = 64
_ID_MAX = 200
# One bucket per second of the last minute: (epoch second, done, failed, retried).
_BUCKET = struct.Struct("<IIII")
_BUCKETS = 60
_RING = struct.Struct("<" + "IIII" * _BUCKETS)
_RING_OFFSET = _ID_OFFSET + _ID_MAX + 8
# For the Prometheus endpoint: jobs that ended by their timeout, and each job's duration
# in histogram buckets. A job adds one to its own bucket only (not to every bucket above
# it): one memory write per job, made cumulative when the master reads it.
DURATION_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0, 300.0)  # seconds; +Inf is the bucket after the last
_TIMED_OUT_AND_SUM = struct.Struct("<Qd")  # timed out, seconds of every job summed
_TOTALS_OFFSET = _RING_OFFSET + _RING.size
_COUNT = struct.Struct("<Q")
_HISTOGRAM_OFFSET = _TOTALS_OFFSET + _TIMED_OUT_AND_SUM.size
_HISTOGRAM = struct.Struct("<" + "Q" * (len(DURATION_BUCKETS) + 1))
SIZE = 4096
assert _HISTOGRAM_OFFSET + _HISTOGRAM.size <= SIZE and _TOTALS_OFFSET % 8 == 0

DONE, FAILED, RETRIED, DEAD = range(4)


class Snapshot(NamedTuple):
    """One reading of a worker's counters. A named tuple rather than a frozen dataclass:
    `status` makes one per worker (256 at a time), and a frozen dataclass's __init__ costs
    a setattr call per field."""

    done: int
    failed: int
    retried: int
    dead: int
    held: int
    job_id: str | None
    job_started: float | None
    done_last_minute: int
    failed_last_minute: int
    retried_last_minute: int


Ring = tuple[int, ...]  # (second, done, failed, retried) per bucket, flattened


class Totals(NamedTuple):
    """A worker's counters since it started, for the Prometheus endpoint."""

    finished: int  # every job settled: acked, retried or dead-lettered
    failed: int  # retried or dead-lettered
    retried: int
    dead: int
    timed_out: int  # failed by its timeout (counted in failed too)
    buckets: tuple[int, ...]  # jobs per duration bucket, NOT cumulative; the last is +Inf
    seconds: float  # the durations summed


EMPTY_TOTALS = Totals(0, 0, 0, 0, 0, (0,) * (len(DURATION_BUCKETS) + 1), 0.0)


def add_totals(a: Totals, b: Totals) -> Totals:
    return Totals(a.finished + b.finished, a.failed + b.failed, a.retried + b.retried,
                  a.dead + b.dead, a.timed_out + b.timed_out,
                  tuple(x + y for x, y in zip(a.buckets, b.buckets)), a.seconds + b.seconds)


def cumulative(buckets: tuple[int, ...]) -> list[int]:
    """Per-bucket counts as Prometheus wants them: each bucket counts every job up to it."""
    return list(accumulate(buckets))


def last_minute_of(ring: Ring, now: float) -> tuple[int, int, int]:
    """Done, failed and retried over the buckets of the minute before `now`. The common
    cases stay in C: every bucket current (a busy worker), or none."""
    horizon = int(now) - _BUCKETS
    seconds = ring[0::4]
    done, failed, retried = ring[1::4], ring[2::4], ring[3::4]
    if min(seconds) > horizon:
        return sum(done), sum(failed), sum(retried)
    fresh = [second > horizon for second in seconds]
    return (sum(compress(done, fresh)), sum(compress(failed, fresh)),
            sum(compress(retried, fresh)))


def ring_of(buckets: list[list[int]]) -> Ring:
    """A ring from some of its buckets, (second, done, failed, retried) each; the others
    empty."""
    ring = [0] * (4 * _BUCKETS)
    for second, done, failed, retried in buckets:
        offset = 4 * (int(second) % _BUCKETS)
        ring[offset:offset + 4] = [int(second), int(done), int(failed), int(retried)]
    return tuple(ring)


def create() -> int:
    """A new zeroed segment; returns its fd (the master keeps it, the worker inherits it)."""
    fd = os.memfd_create("qsupervisor-worker-stats", os.MFD_CLOEXEC)
    os.ftruncate(fd, SIZE)
    return fd


class Stats:
    def __init__(self, fd: int, keep_fd: bool = False) -> None:
        """`keep_fd`: this object owns `fd` (the master's, so that a re-exec can hand the
        segment over); else the caller closes it once mapped."""
        # mmap keeps a duplicate of the descriptor unless told not to (Python 3.13).
        untracked: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}
        self._map = mmap.mmap(fd, SIZE, **untracked)
        self.fd: int | None = fd if keep_fd else None
        # The worker's own note of when its job started, for the duration: monotonic, so
        # a clock step never makes a negative or hour-long job (never read by the master).
        self._started: float | None = None

    # -- written by the worker --------------------------------------------------------

    def job_started(self, job_id: str) -> None:
        raw = job_id.encode("utf-8", "replace")[:_ID_MAX]
        self._map[_ID_OFFSET:_ID_OFFSET + len(raw)] = raw
        values = list(_HEADER.unpack_from(self._map, 0))
        values[5], values[6] = time.time(), len(raw)
        _HEADER.pack_into(self._map, 0, *values)
        self._started = time.monotonic()

    def job_finished(self, outcome: int, timed_out: bool = False) -> None:
        """`outcome`: DONE (acked), FAILED and RETRIED, or FAILED and DEAD; `timed_out`:
        it failed by running past its timeout. A job that never started here (a message
        whose earlier run was lost, failed on arrival) has no duration."""
        if self._started is not None:
            self._observe(time.monotonic() - self._started, timed_out)
            self._started = None
        elif timed_out:
            self._observe(None, True)
        values = list(_HEADER.unpack_from(self._map, 0))
        values[0] += 1
        if outcome != DONE:
            values[1] += 1
        if outcome == RETRIED:
            values[2] += 1
        elif outcome == DEAD:
            values[3] += 1
        values[5], values[6] = 0.0, 0
        _HEADER.pack_into(self._map, 0, *values)
        self._count_this_second(outcome)

    def _observe(self, seconds: float | None, timed_out: bool) -> None:
        count, total = _TIMED_OUT_AND_SUM.unpack_from(self._map, _TOTALS_OFFSET)
        if seconds is not None:
            seconds = max(0.0, seconds)
            offset = _HISTOGRAM_OFFSET + _COUNT.size * bisect_left(DURATION_BUCKETS, seconds)
            _COUNT.pack_into(self._map, offset, _COUNT.unpack_from(self._map, offset)[0] + 1)
            total += seconds
        _TIMED_OUT_AND_SUM.pack_into(self._map, _TOTALS_OFFSET, count + timed_out, total)

    def set_held(self, held: int) -> None:
        values = list(_HEADER.unpack_from(self._map, 0))
        values[4] = max(0, held)
        _HEADER.pack_into(self._map, 0, *values)

    def _count_this_second(self, outcome: int) -> None:
        now = int(time.time())
        offset = _RING_OFFSET + (now % _BUCKETS) * _BUCKET.size
        second, done, failed, retried = _BUCKET.unpack_from(self._map, offset)
        if second != now:
            second, done, failed, retried = now, 0, 0, 0
            _NEWEST.pack_into(self._map, _NEWEST_OFFSET, now)
        _BUCKET.pack_into(self._map, offset, second, done + 1,
                          failed + (outcome != DONE), retried + (outcome == RETRIED))

    # -- read by the master -------------------------------------------------------------

    def read(self) -> Snapshot:
        done, failed, retried, dead, held, started, length = _HEADER.unpack_from(self._map, 0)
        job_id = None
        if started:
            raw = bytes(self._map[_ID_OFFSET:_ID_OFFSET + min(length, _ID_MAX)])
            job_id = raw.decode("utf-8", "replace")
        return Snapshot(done, failed, retried, dead, held, job_id, started or None,
                        *self._last_minute())

    def totals(self) -> Totals:
        finished, failed, retried, dead = _HEADER.unpack_from(self._map, 0)[:4]
        timed_out, seconds = _TIMED_OUT_AND_SUM.unpack_from(self._map, _TOTALS_OFFSET)
        return Totals(finished, failed, retried, dead, timed_out,
                      _HISTOGRAM.unpack_from(self._map, _HISTOGRAM_OFFSET), seconds)

    def ring(self) -> Ring:
        """The per-second buckets as they are now: what the master keeps of a worker that
        exited, to count its jobs for as long as they are in the last minute."""
        return _RING.unpack_from(self._map, _RING_OFFSET)

    def _last_minute(self) -> tuple[int, int, int]:
        """`status` reads this for every worker (256 at a time): a worker idle for a
        minute is answered from one field, without the ring."""
        now = time.time()
        if _NEWEST.unpack_from(self._map, _NEWEST_OFFSET)[0] <= int(now) - _BUCKETS:
            return 0, 0, 0
        return last_minute_of(self.ring(), now)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self._map.close()
