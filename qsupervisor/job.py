"""The job a worker is running, for handlers that want its context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# A message without a `message_id` is named "sha1:" and 16 hex digits of its body's SHA-1
# (broker/messages.py). Such names are not unique: identical bodies share one, which is
# why the master does not act on another worker holding the same name (master/questions.py).
DERIVED_ID_PREFIX: Final = "sha1:"


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
