"""What a worker's exit means (master/exits.py): one test per row of the table in
docs/architecture.md, "Failures, recycling, backoff and FATAL", and the crash-ledger rule
beneath it. Wait statuses are built as waitpid returns them."""

from __future__ import annotations

import signal

from qsupervisor.exit_codes import (
    EXIT_HANDLER_IMPORT,
    EXIT_JOB_TIMEOUT,
    EXIT_STOP_TIMEOUT,
)
from qsupervisor.master.exits import Exit, ExitFacts, ExitKind, classify_exit


def exited(code: int) -> int:
    return code << 8


def signalled(sig: int) -> int:
    return int(sig)


def classify(status: int, how: str, **facts: object) -> Exit:
    facts.setdefault("was_ready", True)
    return classify_exit(ExitFacts(status=status, how=how, **facts))  # type: ignore[arg-type]


# -- the table, first row that applies wins ---------------------------------------------


def test_a_job_timeout_the_worker_abandoned_is_replaced_at_once_never_a_failure() -> None:
    meaning = classify(exited(EXIT_JOB_TIMEOUT), "exit code 5", exit_reason="timeout",
                       exit_error="job ran longer than timeout (60s)", exit_settled=True,
                       job_in_hand=True)
    assert (meaning.kind, meaning.summary) == (
        ExitKind.TIMED_OUT, "killed: timeout (job ran longer than timeout (60s))")
    assert meaning.replace_now and not meaning.start_failure
    assert meaning.crash_cause is None  # it settled the message itself


def test_a_worker_the_watchdog_killed_for_its_timeout_is_replaced_and_its_job_recorded() -> None:
    meaning = classify(signalled(signal.SIGKILL), "signal SIGKILL", killed="timeout",
                       job_in_hand=True)
    assert meaning.summary == "killed: timeout (signal SIGKILL)"
    assert meaning.replace_now
    assert meaning.crash_cause == "killed: timeout"


def test_a_worker_killed_because_its_message_was_redelivered_is_replaced_and_its_job_recorded(
) -> None:
    meaning = classify(signalled(signal.SIGKILL), "signal SIGKILL", killed="redelivered",
                       job_in_hand=True)
    assert (meaning.kind, meaning.summary) == (
        ExitKind.REDELIVERED,
        "killed: its message was redelivered (broker connection lost during the job)")
    assert meaning.replace_now and not meaning.start_failure  # never a failure
    assert meaning.crash_cause == "killed: broker connection lost during the job"
    # Also while it was being stopped (a reload's drain): the kill is what it died of.
    stopping = classify(signalled(signal.SIGKILL), "signal SIGKILL", killed="redelivered",
                        stop_reason="reload", job_in_hand=True)
    assert stopping.kind is ExitKind.REDELIVERED and stopping.replace_now


def test_a_worker_killed_after_stop_timeout_is_as_stopped_naming_why_it_was_stopped() -> None:
    meaning = classify(signalled(signal.SIGKILL), "signal SIGKILL", stop_reason="reload",
                       killed="stop_timeout", job_in_hand=True)
    assert (meaning.kind, meaning.summary) == (
        ExitKind.KILLED, "killed: stop_timeout (reload)")
    assert meaning.replace_now
    assert meaning.crash_cause == "signal SIGKILL"  # its job did not finish


def test_a_worker_the_master_stopped_reports_why_and_how_it_ended_when_not_cleanly() -> None:
    clean = classify(exited(0), "exit code 0", stop_reason="scale", exit_reason="stop")
    assert (clean.kind, clean.summary) == (ExitKind.STOPPED, "stopped: scale")
    late = classify(exited(EXIT_STOP_TIMEOUT), "exit code 4", stop_reason="shutdown")
    assert late.summary == "stopped: shutdown (exit code 4)"
    assert clean.replace_now and late.replace_now  # if its slot is still wanted


def test_a_worker_that_left_on_purpose_with_status_0_is_recycled_never_a_failure() -> None:
    for reason in ("max_jobs", "max_memory", "max_age", "stop"):
        meaning = classify(exited(0), "exit code 0", exit_reason=reason)
        assert (meaning.kind, meaning.summary) == (ExitKind.RECYCLED, f"recycled: {reason}")
        assert meaning.replace_now and not meaning.failure


def test_a_handler_that_cannot_be_imported_is_a_failed_start() -> None:
    meaning = classify(exited(EXIT_HANDLER_IMPORT), "exit code 3",
                       exit_error="ModuleNotFoundError: No module named 'shop'", was_ready=False)
    assert (meaning.kind, meaning.summary) == (
        ExitKind.FAILED, "failed: ModuleNotFoundError: No module named 'shop'")
    assert meaning.failure and meaning.start_failure


def test_anything_else_is_a_crash_and_a_failure() -> None:
    meaning = classify(signalled(signal.SIGSEGV), "signal SIGSEGV", job_in_hand=True)
    assert (meaning.kind, meaning.summary) == (ExitKind.CRASHED,
                                               "crashed: signal SIGSEGV during a job")
    assert meaning.failure and not meaning.start_failure  # it had reached RUNNING
    assert meaning.crash_cause == "signal SIGSEGV"


def test_an_exit_before_running_is_a_start_failure() -> None:
    meaning = classify(exited(1), "exit code 1", was_ready=False)
    assert meaning.kind is ExitKind.CRASHED and meaning.start_failure


def test_a_fork_that_failed_is_a_start_failure() -> None:
    meaning = classify_exit(ExitFacts(status=None, how="fork failed: EAGAIN"))
    assert meaning.summary == "crashed: fork failed: EAGAIN"
    assert meaning.start_failure


def test_the_first_row_that_applies_wins() -> None:
    # Stopped by the master and then exiting with a reason of its own: stopped, not recycled.
    assert classify(exited(0), "exit code 0", stop_reason="reload",
                    exit_reason="max_jobs").kind is ExitKind.STOPPED
    # A reason without status 0 is not a recycle.
    assert classify(exited(1), "exit code 1", exit_reason="max_jobs").kind is ExitKind.CRASHED


# -- the crash ledger -------------------------------------------------------------------


def test_a_job_in_hand_is_recorded_whatever_the_exit_status() -> None:
    assert classify(exited(1), "exit code 1", job_in_hand=True).crash_cause == "exit code 1"
    assert classify(exited(1), "exit code 1", job_in_hand=False).crash_cause is None
    # A handler calling os._exit(0): its message ran 36 times in 13 minutes, never counted,
    # when status 0 was taken for a clean exit. A worker leaving on purpose has no job in
    # hand (it finishes or abandons it first), so a job in hand is a death during the job.
    meaning = classify(exited(0), "exit code 0", job_in_hand=True)
    assert meaning.crash_cause == "exit code 0"
    assert meaning.kind is ExitKind.CRASHED and meaning.failure
    assert meaning.summary == "crashed: exit code 0 during a job"


def test_an_abandoned_job_the_worker_could_not_settle_is_recorded() -> None:
    meaning = classify(exited(EXIT_JOB_TIMEOUT), "exit code 5", exit_reason="timeout",
                       exit_settled=False, job_in_hand=True)
    assert meaning.crash_cause == "exit code 5"
