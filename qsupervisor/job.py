"""The job a worker is running, for handlers that want its context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    message_id: str
    queue: str
    attempt: int
    redelivered: bool
    headers: Mapping[str, Any] = field(default_factory=dict)


_current: Job | None = None


def current_job() -> Job | None:
    """The job being handled in this worker, or None outside a job.

    A module global rather than a thread-local: a worker runs one job at a time, and a
    handler that starts helper threads should still see its job.
    """
    return _current


def _set_current(job: Job | None) -> None:
    global _current
    _current = job
