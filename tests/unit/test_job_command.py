"""A program's `command:` run for one job (worker/command.py), with real processes: the
body on stdin, placeholders and environment, exit statuses and signals as failed
attempts with stderr's tail, the timeout that ends the command's whole session, and
pipes that never wedge the worker."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from qsupervisor.broker import messages
from qsupervisor.config import ProgramConfig
from qsupervisor.job import Job
from qsupervisor.worker import command as command_mod
from qsupervisor.worker.command import CommandUnavailable, JobCommand
from qsupervisor.worker.jobs import JobFailed

JOB = Job(message_id="m-1", queue="orders", attempt=2, redelivered=False,
          headers={"price": 2.5, "tag": b"raw", "n": 3})


def command(*argv: str, **settings: Any) -> JobCommand:
    return JobCommand(ProgramConfig(name="orders", queue="orders", command=tuple(argv),
                                    **settings))


def sh(script: str, **settings: Any) -> JobCommand:
    return command("/bin/sh", "-c", script, **settings)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_the_body_goes_to_stdin_and_exit_0_is_done(tmp_path: Path) -> None:
    out = tmp_path / "body"
    sh(f"cat > {out}")(None, b'{"a": 1}\n\x00\xff', JOB)
    assert out.read_bytes() == b'{"a": 1}\n\x00\xff'


def test_placeholders_are_filled_per_job(tmp_path: Path) -> None:
    out = tmp_path / "args"
    cmd = command(sys.executable, "-c",
                  "import json,sys; open(sys.argv[1],'w').write(json.dumps(sys.argv[2:]))",
                  str(out), "{message_id}", "{attempt}", "{timeout}", "{program}", "{queue}",
                  "{worker_pid}", "id={message_id}", "{{attempt}}", "{attempts}", "{ x; }",
                  timeout=2.5, attempts=7)
    cmd(None, b"", JOB)
    assert json.loads(out.read_text()) == ["m-1", "2", "3", "orders", "orders",
                                           str(os.getpid()), "id=m-1", "{attempt}", "7", "{ x; }"]


def test_the_same_facts_and_the_headers_are_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    cmd = command(sys.executable, "-c",
                  "import json,os,sys; open(sys.argv[1],'w').write(json.dumps("
                  "{k: v for k, v in os.environ.items() if k.startswith('QSUPERVISOR_')}))",
                  str(out), timeout=0)
    cmd(None, b"", JOB)
    env = json.loads(out.read_text())
    assert env["QSUPERVISOR_MESSAGE_ID"] == "m-1"
    assert env["QSUPERVISOR_ATTEMPT"] == "2"
    assert env["QSUPERVISOR_TIMEOUT"] == "0"
    assert env["QSUPERVISOR_PROGRAM"] == env["QSUPERVISOR_QUEUE"] == "orders"
    assert env["QSUPERVISOR_WORKER_PID"] == str(os.getpid())
    assert json.loads(env["QSUPERVISOR_HEADERS"]) == {"price": 2.5, "tag": "raw", "n": 3}


def test_a_non_zero_exit_is_a_failed_attempt_with_the_tail_of_stderr() -> None:
    with pytest.raises(JobFailed) as failed:
        sh("echo 'PHP Fatal error: Class Foo not found' >&2; exit 3")(None, b"", JOB)
    assert failed.value.reason == messages.REASON_EXIT
    assert failed.value.error_type == "ExitStatus"
    assert failed.value.error == "command exited with status 3"
    assert failed.value.details == "PHP Fatal error: Class Foo not found\n"


def test_death_by_a_signal_is_a_failed_attempt() -> None:
    with pytest.raises(JobFailed) as failed:
        sh("kill -SEGV $$")(None, b"", JOB)
    assert failed.value.error_type == "KilledBySignal"
    assert failed.value.error == "command was killed by SIGSEGV"


def test_only_the_tail_of_a_long_stderr_is_kept() -> None:
    with pytest.raises(JobFailed) as failed:
        sh("head -c 300000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1")(None, b"", JOB)
    details = failed.value.details
    assert len(details) == command_mod.STDERR_TAIL
    assert details.endswith("xEND\n")


def test_a_timeout_ends_the_whole_session_and_the_worker_goes_on(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(JobFailed) as failed:
        sh(f"sleep 60 & echo $! > {pids}; sleep 60", timeout=0.5)(None, b"", JOB)
    took = time.monotonic() - started
    assert failed.value.reason == messages.REASON_TIMEOUT
    assert "timeout (0.5s)" in failed.value.error
    assert 0.5 <= took < 3.0, took
    assert wait_gone(int(pids.read_text())), "the command's background child outlived it"


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_mod, "KILL_GRACE", 0.5)
    started = time.monotonic()
    with pytest.raises(JobFailed) as failed:
        sh("trap '' TERM; sleep 60 & wait; sleep 60", timeout=0.3)(None, b"", JOB)
    took = time.monotonic() - started
    assert failed.value.reason == messages.REASON_TIMEOUT
    assert 0.8 <= took < 3.0, took


def test_a_command_that_never_reads_a_large_body_does_not_wedge_the_worker() -> None:
    started = time.monotonic()
    sh("exit 0")(None, b"x" * (4 * 1024 * 1024), JOB)
    assert time.monotonic() - started < 5


def test_a_large_body_reaches_a_command_that_reads_it_slowly(tmp_path: Path) -> None:
    out = tmp_path / "body"
    body = os.urandom(3 * 1024 * 1024)
    sh(f"sleep 0.2; cat > {out}")(None, body, JOB)
    assert out.read_bytes() == body


def test_a_background_process_holding_stderr_neither_delays_the_job_nor_survives_it(
        tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    sh(f"sleep 30 & echo $! > {pids}; exit 0")(None, b"", JOB)
    assert time.monotonic() - started < 2
    assert wait_gone(int(pids.read_text())), "a process the job left behind survived it"


def test_kill_ends_the_command_in_hand(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cmd = sh(f"echo $$ > {pids}; sleep 60")
    result: list[BaseException] = []

    def run() -> None:
        try:
            cmd(None, b"", JOB)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    cmd.kill()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(result[0], JobFailed) and result[0].error_type == "KilledBySignal"


def test_a_command_that_cannot_start_fails_the_attempt(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n")  # not executable
    with pytest.raises(JobFailed) as failed:
        command(str(script))(None, b"", JOB)
    assert failed.value.error_type == "CommandNotStarted"
    assert "Permission denied" in failed.value.error


def test_check_finds_a_missing_or_unexecutable_program(tmp_path: Path) -> None:
    with pytest.raises(CommandUnavailable, match="'no-such-qsv-tool' is not found in PATH"):
        command("no-such-qsv-tool").check()
    with pytest.raises(CommandUnavailable, match="does not exist"):
        command(str(tmp_path / "missing")).check()
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(CommandUnavailable, match="is not executable"):
        command(str(script)).check()
    command("sh").check()
    command("/bin/sh").check()
