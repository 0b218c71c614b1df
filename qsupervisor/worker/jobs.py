"""Running one job: decode the body, call the handler, record the outcome."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from qsupervisor import job as job_context
from qsupervisor import logs
from qsupervisor.job import Job
from qsupervisor.worker.stats import Stats

log = logs.get("qsupervisor.worker")

ATTEMPT_HEADER = "x-qsupervisor-attempt"


def message_id(properties: Any, body: bytes) -> str:
    """The producer's message id, or a stand-in that still lets an operator find it."""
    if getattr(properties, "message_id", None):
        return str(properties.message_id)
    return f"(no message id; {len(body)} bytes)"


class JobRunner:
    def __init__(self, handler: Callable[[Any], Any], queue: str, stats: Stats) -> None:
        self._handler = handler
        self._queue = queue
        self._stats = stats

    def run(self, properties: Any, body: bytes, redelivered: bool) -> bool:
        """Handle one message; True when it should be acked."""
        headers: Mapping[str, Any] = getattr(properties, "headers", None) or {}
        msg_id = message_id(properties, body)
        self._stats.job_started(msg_id)
        ok = False
        try:
            try:
                payload = json.loads(body)
            except ValueError as exc:
                log.error("undecodable message body; rejecting it", queue=self._queue,
                          message_id=msg_id, error=str(exc), body_prefix=body[:80].hex())
                return False
            job_context._set_current(Job(
                message_id=msg_id, queue=self._queue,
                attempt=_attempt(headers), redelivered=redelivered, headers=dict(headers)))
            try:
                self._handler(payload)
            except Exception:
                log.exception("job failed", queue=self._queue, message_id=msg_id)
                return False
            ok = True
            return True
        finally:
            job_context._set_current(None)
            self._stats.job_finished(ok)


def _attempt(headers: Mapping[str, Any]) -> int:
    try:
        return max(1, int(headers.get(ATTEMPT_HEADER, 1)))
    except (TypeError, ValueError):
        return 1
