"""Running one job and deciding what becomes of its message.

The job thread calls `JobRunner.run`, which never raises: it returns an `Outcome` that the
I/O thread carries out (ack; or publish a retry or a dead letter, wait for the broker's
confirm, and only then ack the original, so that there is no moment at which the message
exists nowhere).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import pika

from qsupervisor import job as job_context
from qsupervisor import logs
from qsupervisor import stats_segment as stats_mod
from qsupervisor.broker import messages
from qsupervisor.config import ProgramConfig
from qsupervisor.job import Job
from qsupervisor.stats_segment import Stats

log = logs.get("qsupervisor.worker")

# A delayed message that arrives before it is due goes back to wait (clocks of producers
# and workers drift, and running a job early is the one thing we promise not to). Due times
# are whole milliseconds, hence the tolerance of one.
EARLY_TOLERANCE = 0.001

ACK, RETRY, DEAD, REDELAY = "ack", "retry", "dead", "redelay"

CrashLookup = Callable[[str], tuple[int, str]]
# What runs a job: given the decoded payload, the body as it came, and the job's context.
# A Python handler takes only the payload (see `handler_call`); a command takes the body.
JobCall = Callable[[Any, bytes, Job], Any]


class JobFailed(Exception):
    """A failed attempt that is not a Python exception of the job's own: a command that
    exited non-zero or ran past its timeout. Carries what the dead letter records."""

    def __init__(self, reason: str, error_type: str, error: str, details: str = "") -> None:
        super().__init__(error)
        self.reason = reason
        self.error_type = error_type
        self.error = error
        self.details = details  # the dead letter's x-qsupervisor-traceback: stderr's tail


def handler_call(handler: Callable[[Any], Any]) -> JobCall:
    def call(payload: Any, _body: bytes, _job: Job) -> Any:
        return handler(payload)
    return call


@dataclass(frozen=True)
class Outcome:
    kind: str
    message_id: str
    body: bytes = b""
    properties: pika.BasicProperties | None = None
    delay: float = 0.0
    stat: int = stats_mod.DONE
    timed_out: bool = False  # a failed attempt because the job ran past its timeout


class JobRunner:
    def __init__(self, call: JobCall, program: ProgramConfig, stats: Stats,
                 crash_lookup: CrashLookup, on_start: Callable[[], None] = lambda: None) -> None:
        self._call = call
        self._program = program
        self._stats = stats
        self._crash_lookup = crash_lookup
        self._on_start = on_start  # arms the job timeout; called once the start is recorded

    def run(self, properties: Any, body: bytes, redelivered: bool) -> Outcome:
        headers: Mapping[str, Any] = getattr(properties, "headers", None) or {}
        msg_id = messages.message_id_of(properties, body)
        attempt = messages.attempt_of(headers)
        early = _seconds_early(headers)
        if early > EARLY_TOLERANCE:
            return Outcome(REDELAY, msg_id, body, properties, delay=early)
        if redelivered:
            crashes, how = self._crash_lookup(msg_id)
            if crashes:
                # An earlier run of this message was lost: its worker died during the job,
                # or its broker connection did. That was a failed attempt, so a message
                # that kills every worker (or starves every connection) ends dead-lettered.
                outcome = self.failure(properties, body, attempt + crashes - 1,
                                       messages.REASON_CRASHED, error_type="WorkerDied",
                                       error=f"an earlier run of this job was lost ({how})")
                self._stats.job_finished(outcome.stat)
                return outcome
        self._stats.job_started(msg_id)
        self._on_start()
        outcome = self._execute(properties, body, headers, msg_id, attempt, redelivered)
        self._stats.job_finished(outcome.stat, outcome.timed_out)
        return outcome

    def _execute(self, properties: Any, body: bytes, headers: Mapping[str, Any], msg_id: str,
                 attempt: int, redelivered: bool) -> Outcome:
        try:
            payload = messages.decode(body, self._program.format)
        except messages.Undecodable as exc:
            log.error("undecodable message; dead-lettering it", queue=self._program.queue,
                      message_id=msg_id, reason=str(exc))
            return self.dead(properties, body, attempt, messages.REASON_UNDECODABLE,
                             error_type="Undecodable", error=str(exc))
        job = Job(message_id=msg_id, queue=self._program.queue, attempt=attempt,
                  redelivered=redelivered, headers=dict(headers))
        job_context._set_current(job)
        try:
            self._call(payload, body, job)
        except JobFailed as exc:
            log.error("job failed", queue=self._program.queue, message_id=msg_id,
                      attempt=attempt, of=self._program.attempts, reason=exc.reason,
                      error=exc.error)
            return self.failure(properties, body, attempt, exc.reason,
                                error_type=exc.error_type, error=exc.error, tb=exc.details)
        except BaseException as exc:  # sys.exit() in a handler fails the job, not the thread
            log.error("job failed", queue=self._program.queue, message_id=msg_id,
                      attempt=attempt, of=self._program.attempts, exc_info=True)
            return self.failure(properties, body, attempt, messages.REASON_EXCEPTION,
                                error_type=messages.error_type_name(exc), error=str(exc),
                                tb=traceback.format_exc())
        finally:
            job_context._set_current(None)
        return Outcome(ACK, msg_id)

    def held(self, count: int) -> None:
        self._stats.set_held(count)

    def job_finished(self, stat: int, timed_out: bool = False) -> None:
        self._stats.job_finished(stat, timed_out)

    # -- failure paths, also used by the I/O thread when a job times out ------------------

    def failure(self, properties: Any, body: bytes, attempt: int, reason: str, *,
                error_type: str, error: str, tb: str = "") -> Outcome:
        """Attempt number `attempt` failed: retry later, or dead-letter when it was the last."""
        if attempt >= self._program.attempts:
            return self.dead(properties, body, attempt, reason, error_type=error_type,
                             error=error, tb=tb)
        delay = self._program.backoff.delay(attempt)
        headers = messages.retry_headers(_headers(properties), delay,
                                         timestamp=getattr(properties, "timestamp", None))
        headers[messages.ATTEMPT] = attempt + 1  # crashes may have used up more than one
        msg_id = messages.message_id_of(properties, body)
        log.warning("job will be retried", queue=self._program.queue, message_id=msg_id,
                    attempt=attempt, next_attempt=attempt + 1, retry_in=round(delay, 3),
                    reason=reason)
        return Outcome(RETRY, msg_id, body, _with_headers(properties, headers), delay=delay,
                       stat=stats_mod.RETRIED, timed_out=reason == messages.REASON_TIMEOUT)

    def dead(self, properties: Any, body: bytes, attempt: int, reason: str, *,
             error_type: str, error: str, tb: str = "") -> Outcome:
        failure = messages.Failure(reason, error_type, error, tb)
        headers = messages.dead_letter_headers(_headers(properties), failure,
                                               queue=self._program.queue, attempts=attempt)
        msg_id = messages.message_id_of(properties, body)
        log.error("message dead-lettered", queue=self._program.queue, message_id=msg_id,
                  attempts=attempt, reason=reason, error=error,
                  dead_letter_queue=self._program.dead_letter_queue)
        return Outcome(DEAD, msg_id, body, _with_headers(properties, headers), stat=stats_mod.DEAD,
                       timed_out=reason == messages.REASON_TIMEOUT)


def attempt_of_delivery(properties: Any) -> int:
    return messages.attempt_of(_headers(properties))


def _headers(properties: Any) -> dict[str, Any]:
    return dict(getattr(properties, "headers", None) or {})


def _with_headers(properties: Any, headers: dict[str, Any]) -> pika.BasicProperties:
    """A copy of the message's properties with new headers; persistent whatever it was."""
    headers, replaced = messages.republishable(headers)
    if replaced:
        log.warning("header values that AMQP cannot carry are republished as their text",
                    message_id=getattr(properties, "message_id", None), headers=replaced)
    return pika.BasicProperties(
        content_type=getattr(properties, "content_type", None),
        content_encoding=getattr(properties, "content_encoding", None),
        headers=headers,
        delivery_mode=2,
        priority=getattr(properties, "priority", None),
        correlation_id=getattr(properties, "correlation_id", None),
        reply_to=getattr(properties, "reply_to", None),
        message_id=getattr(properties, "message_id", None),
        timestamp=getattr(properties, "timestamp", None),
        type=getattr(properties, "type", None),
        app_id=getattr(properties, "app_id", None),
    )


def _seconds_early(headers: Mapping[str, Any]) -> float:
    due = messages.due_at_of(headers)
    return 0.0 if due is None else due / 1000.0 - time.time()
