"""What a worker's exit means, decided once.

The most intricate rule of a supervisor: from what the master knows when a worker is gone
(its wait status, whether the master asked it to stop or killed it, what the worker said
on its way out, whether it held a job), one pure function derives everything the master
does next: the summary `status` shows, whether the slot's replacement comes at once or
after a backoff, whether it counts towards FATAL, and whether the job in hand goes into
the crash ledger. docs/architecture.md ("Failures, recycling, backoff and FATAL") is
this module's table, row for row; the first row that applies wins.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from qsupervisor.exit_codes import EXIT_HANDLER_IMPORT, EXIT_JOB_TIMEOUT

# The master's reason when it SIGKILLs a worker whose job ran past `timeout`.
KILLED_FOR_TIMEOUT = "timeout"
# ... and when the broker redelivered the message of its job in hand to another worker:
# its channel is gone (the broker redelivers only then), so that job can never be settled.
KILLED_FOR_REDELIVERY = "redelivered"
REDELIVERED_CAUSE = "killed: broker connection lost during the job"


class ExitKind(enum.Enum):
    TIMED_OUT = "killed: timeout"  # a job ran past `timeout`: abandoned, or killed for it
    REDELIVERED = "killed: its message was redelivered"  # its broker connection died
    KILLED = "killed"  # SIGKILLed by the master after `stop_timeout`
    STOPPED = "stopped"  # the master asked it to stop
    RECYCLED = "recycled"  # it left on purpose, status 0, saying why
    FAILED = "failed"  # it said what went wrong (its handler could not be imported)
    CRASHED = "crashed"  # anything else


@dataclass(frozen=True)
class ExitFacts:
    """What the master knows of a worker when it is gone."""

    status: int | None  # the wait status; None when there was no process (fork failed)
    how: str  # the status in words ("exit code 1", "signal SIGKILL", "fork failed: ...")
    stop_reason: str | None = None  # why the master asked it to stop
    killed: str | None = None  # why the master SIGKILLed it: stop_timeout | timeout | redelivered
    exit_reason: str | None = None  # what the worker said on its way out
    exit_error: str | None = None
    exit_settled: bool = False  # it settled its job's message itself (after a timeout)
    job_in_hand: bool = False  # its stats segment named a job when it went
    was_ready: bool = False  # it had reached RUNNING

    @property
    def code(self) -> int | None:
        """The exit status, or None if it ended by a signal or never ran."""
        if self.status is None or not os.WIFEXITED(self.status):
            return None
        return os.WEXITSTATUS(self.status)


@dataclass(frozen=True)
class Exit:
    """What the exit means, and so what the master does about it."""

    kind: ExitKind
    summary: str  # `last exit` in status
    # Replace the worker at once, never a failure (when its slot is still wanted and the
    # program runs); otherwise the exit is a failure and its slot backs off.
    replace_now: bool
    start_failure: bool  # a failure before the worker ever ran: counts towards FATAL
    crash_cause: str | None  # record its job in hand in the crash ledger, with this

    @property
    def failure(self) -> bool:
        return not self.replace_now


def classify_exit(facts: ExitFacts) -> Exit:
    code = facts.code
    timed_out = code == EXIT_JOB_TIMEOUT or facts.killed == KILLED_FOR_TIMEOUT
    kind, summary = _summary(facts, timed_out)
    # Recycled on purpose, stopped for a reason (one that has passed when its leader died),
    # or replaced after a job timeout or a redelivery of its job: a new worker at once,
    # never a failure (the job's message, not the worker, is what failed).
    redelivered = facts.killed == KILLED_FOR_REDELIVERY
    replace_now = bool(facts.stop_reason or timed_out or redelivered
                       or (code == 0 and facts.exit_reason))
    start_failure = not replace_now and (not facts.was_ready or code == EXIT_HANDLER_IMPORT)
    return Exit(kind, summary, replace_now, start_failure, _crash_cause(facts, code))


def _summary(facts: ExitFacts, timed_out: bool) -> tuple[ExitKind, str]:
    status_zero = facts.code == 0
    if timed_out:
        return ExitKind.TIMED_OUT, f"killed: timeout ({facts.exit_error or facts.how})"
    if facts.killed == KILLED_FOR_REDELIVERY:
        return (ExitKind.REDELIVERED,
                f"{ExitKind.REDELIVERED.value} (broker connection lost during the job)")
    if facts.killed:
        return ExitKind.KILLED, f"killed: {facts.killed} ({facts.stop_reason or facts.how})"
    if facts.stop_reason:
        detail = "" if status_zero else f" ({facts.how})"
        return ExitKind.STOPPED, f"stopped: {facts.stop_reason}{detail}"
    if status_zero and facts.exit_reason:
        return ExitKind.RECYCLED, f"recycled: {facts.exit_reason}"
    if facts.exit_error:
        return ExitKind.FAILED, f"failed: {facts.exit_error}"
    during = " during a job" if facts.job_in_hand else ""
    return ExitKind.CRASHED, f"crashed: {facts.how}{during}"


def _crash_cause(facts: ExitFacts, code: int | None) -> str | None:
    """Whether the message the worker died holding counts as a failed attempt: yes if it
    held one, whatever its exit status (a handler may end the process with os._exit(0)),
    unless it settled that message itself (an abandoned job whose retry or dead letter the
    broker confirmed)."""
    settled = facts.exit_reason == "timeout" and facts.exit_settled
    if not facts.job_in_hand or settled:
        return None
    if facts.killed == KILLED_FOR_TIMEOUT:
        return "killed: timeout"
    return REDELIVERED_CAUSE if facts.killed == KILLED_FOR_REDELIVERY else facts.how
