"""A worker's live counters, in a small shared-memory segment the master can read.

The master wants each worker's job count and current job for `status`, but must not be
woken twice per job for that: at thousands of jobs per second the events would cost more
than the jobs. So the worker writes into a memfd the master also maps, and the master
reads it only when someone asks. A torn read can only show a slightly stale value.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Optional, Tuple

# jobs done, failed, current job start (epoch seconds; 0 = idle), job id length; job id bytes
_HEADER = struct.Struct("<QQdH")
_ID_MAX = 200
SIZE = 4096


def create() -> int:
    """A new zeroed segment; returns its fd (the master keeps it, the worker inherits it)."""
    fd = os.memfd_create("qsupervisor-worker-stats", os.MFD_CLOEXEC)
    os.ftruncate(fd, SIZE)
    return fd


class Stats:
    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, SIZE)

    def job_started(self, job_id: str) -> None:
        jobs, failed, _, _ = _HEADER.unpack_from(self._map, 0)
        raw = job_id.encode("utf-8", "replace")[:_ID_MAX]
        self._map[_HEADER.size:_HEADER.size + len(raw)] = raw
        _HEADER.pack_into(self._map, 0, jobs, failed, time.time(), len(raw))

    def job_finished(self, ok: bool) -> None:
        jobs, failed, _, _ = _HEADER.unpack_from(self._map, 0)
        _HEADER.pack_into(self._map, 0, jobs + 1, failed + (0 if ok else 1), 0.0, 0)

    def read(self) -> Tuple[int, int, Optional[str], Optional[float]]:
        """(jobs done, jobs failed, current job id, its start time)."""
        jobs, failed, started, length = _HEADER.unpack_from(self._map, 0)
        if not started:
            return jobs, failed, None, None
        job_id = bytes(self._map[_HEADER.size:_HEADER.size + min(length, _ID_MAX)])
        return jobs, failed, job_id.decode("utf-8", "replace"), started

    def close(self) -> None:
        self._map.close()
