"""A program's `command:`, run once per job: the body on stdin, the exit status the outcome.

Each job is a new process, so a command runs fresh code every time (`reload` has nothing
to refresh). It runs in a session of its own, so that a timeout, a stop at stop_timeout
or the end of the job can signal every process it started, and nothing it left behind
outlives the job. Its stdout goes straight to the worker's (the program's captured
output); its stderr goes there too, through the worker, which keeps the tail for the
error of a failed attempt.
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from qsupervisor import logs, placeholders
from qsupervisor.broker import messages
from qsupervisor.config import ProgramConfig
from qsupervisor.job import Job
from qsupervisor.worker.jobs import JobFailed

log = logs.get("qsupervisor.worker")

# After a timeout the command's process group gets SIGTERM, and SIGKILL this long after if
# any of it is still there: long enough for a PHP or Node shutdown handler, short next to
# the master's watchdog margin (timeout + 15 s), which would otherwise kill the worker.
KILL_GRACE: Final = 5.0
# How much of a failed command's stderr goes into the dead letter's error details: the
# end, where the error usually is (messages.py truncates headers further if it must).
STDERR_TAIL: Final = 8 * 1024
# How often the wait for a command looks at its exit status while its stderr stays open
# (a background process it started still holds it).
POLL_INTERVAL: Final = 0.05
_READ = 64 * 1024
ENV_PREFIX: Final = "QSUPERVISOR_"


class CommandUnavailable(Exception):
    """The program to run cannot be found or executed: a setup problem, not a job's."""


@dataclass(frozen=True)
class _Run:
    returncode: int
    timed_out: bool
    stderr_tail: bytes


class JobCommand:
    """Runs the program's command for a job. One job at a time (the job thread); the
    main thread may `kill()` the one in hand when the worker must leave."""

    def __init__(self, program: ProgramConfig) -> None:
        self._program = program
        self._argv = program.command
        self._templated = [placeholders.uses_placeholders(arg) for arg in self._argv]
        self._lock = threading.Lock()
        self._running: subprocess.Popen[bytes] | None = None
        # The worker's environment, encoded once: it is the program's and stays as it is
        # for the worker's life (the leader set it before forking). Popen encodes a str
        # mapping again for every job.
        self._base_env: dict[bytes, bytes] = dict(os.environb)

    def check(self) -> None:
        """Raise CommandUnavailable if the program to run cannot be found now: a worker
        that would fail every job must not dead-letter the queue, but fail to start."""
        program = self._argv[0]
        if os.sep in program:
            if not os.access(program, os.X_OK) or os.path.isdir(program):
                why = "does not exist" if not os.path.exists(program) else "is not executable"
                raise CommandUnavailable(f"{program} {why} (in {os.getcwd()})")
        elif shutil.which(program) is None:
            raise CommandUnavailable(f"{program!r} is not found in PATH "
                                     f"({os.environ.get('PATH', '')})")

    def __call__(self, _payload: object, body: bytes, job: Job) -> None:
        """Run the command for `job`; return if it exited 0, raise JobFailed if not."""
        values = self._values(job)
        argv = [placeholders.fill(arg, values) if templated else arg
                for arg, templated in zip(self._argv, self._templated)]
        env = self._base_env.copy()
        env.update(self._environment(values, job.headers))
        # Plain descriptors, not Popen's file objects: the job needs neither buffering nor
        # the fstat, ioctl and lseek calls that wrapping each pipe costs.
        stdin_r, stdin_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, stdin=stdin_r, stderr=stderr_w, env=env,
                                    start_new_session=True)
        except BaseException as exc:
            for fd in (stdin_w, stderr_r):
                os.close(fd)
            if not isinstance(exc, OSError):
                raise
            raise JobFailed(messages.REASON_EXIT, "CommandNotStarted",
                            f"cannot start {argv[0]}: {exc.strerror or exc}", "") from None
        finally:
            os.close(stdin_r)
            os.close(stderr_w)
        with self._lock:
            self._running = proc
        try:
            run = self._wait(proc, stdin_w, stderr_r, body)
        finally:
            with self._lock:
                self._running = None
            _kill_group(proc.pid, signal.SIGKILL)  # whatever it left running in its session
        if run.timed_out:
            raise JobFailed(
                messages.REASON_TIMEOUT, "Timeout",
                f"command ran longer than timeout ({self._program.timeout:g}s); its process "
                f"group was sent SIGTERM, then SIGKILL after {KILL_GRACE:g}s if still running",
                _text(run.stderr_tail))
        if run.returncode != 0:
            raise JobFailed(messages.REASON_EXIT, *_exit_error(run.returncode),
                                _text(run.stderr_tail))

    def kill(self) -> None:
        """Kill the command in hand and everything in its session (the worker is leaving
        with it unfinished; the broker redelivers the message)."""
        with self._lock:
            proc = self._running
        if proc is not None:
            _kill_group(proc.pid, signal.SIGKILL)

    # -- per job --------------------------------------------------------------------

    def _values(self, job: Job) -> dict[str, object]:
        timeout = self._program.timeout
        return {
            "message_id": job.message_id,
            "attempt": job.attempt,
            "attempts": self._program.attempts,
            # Whole seconds, rounded up: what yii's TTR and most CLI timeouts take. 0 = none.
            "timeout": math.ceil(timeout) if timeout else 0,
            "program": self._program.name,
            "queue": self._program.queue,
            "worker_pid": os.getpid(),
            "redelivered": int(job.redelivered),
        }

    def _environment(self, values: Mapping[str, object],
                     headers: Mapping[str, Any]) -> dict[bytes, bytes]:
        env = {os.fsencode(ENV_PREFIX + name.upper()): os.fsencode(str(value))
               for name, value in values.items()}
        env[os.fsencode(ENV_PREFIX + "HEADERS")] = os.fsencode(json.dumps(
            dict(headers), default=_jsonable, ensure_ascii=False, separators=(",", ":")))
        return env

    def _wait(self, proc: subprocess.Popen[bytes], stdin: int, stderr: int,
              body: bytes) -> _Run:
        """Feed stdin, copy stderr to ours while keeping its tail, and wait for the exit,
        signalling the session at timeout. Never blocks on a pipe: a command that does
        not read its stdin, or one that fills its stderr, must not wedge the worker.
        Closes both descriptors."""
        os.set_blocking(stdin, False)
        tail = bytearray()
        # poll(2) on at most two descriptors: no epoll instance to create per job.
        poller = select.poll()
        watched: set[int] = set()
        # A body that fits the pipe (64 KiB on Linux) goes in with one write, before the
        # command has even read it; the rest, if any, as the command reads.
        view = _feed(stdin, memoryview(body))
        if view:
            poller.register(stdin, select.POLLOUT)
            watched.add(stdin)
        else:
            stdin = _close(stdin)
        poller.register(stderr, select.POLLIN)
        watched.add(stderr)
        timeout = self._program.timeout
        deadline = time.monotonic() + timeout if timeout else None
        kill_at: float | None = None  # SIGKILL due, after a timeout's SIGTERM
        timed_out = False
        try:
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    timed_out, deadline, kill_at = True, None, now + KILL_GRACE
                    _kill_group(proc.pid, signal.SIGTERM)
                if kill_at is not None and now >= kill_at:
                    kill_at = None
                    _kill_group(proc.pid, signal.SIGKILL)
                next_due = min((d for d in (deadline, kill_at) if d is not None), default=None)
                if not watched:
                    # Both pipes are done: only the exit is left to wait for.
                    returncode = self._reap(proc, next_due)
                    if returncode is not None:
                        return _Run(returncode, timed_out, bytes(tail))
                    continue
                # Wake now and then to look at the exit status: a background process the
                # command started may hold its stderr open long after it exited.
                wait = POLL_INTERVAL if next_due is None else min(POLL_INTERVAL,
                                                                  max(0.0, next_due - now))
                events = poller.poll(math.ceil(wait * 1000))
                for fd, _mask in events:
                    if fd == stdin:
                        view = _feed(stdin, view)
                        if not view:
                            poller.unregister(stdin)
                            watched.discard(stdin)
                            stdin = _close(stdin)
                    elif not _drain(stderr, tail):
                        poller.unregister(stderr)
                        watched.discard(stderr)
                if not events and proc.poll() is not None:
                    _drain_available(stderr, tail)
                    for fd in watched:
                        poller.unregister(fd)
                    watched.clear()
        finally:
            for fd in (stdin, stderr):
                _close(fd)

    def _reap(self, proc: subprocess.Popen[bytes], until: float | None) -> int | None:
        """The exit status, waiting at most until `until` (None: for good)."""
        try:
            wait = None if until is None else max(0.0, until - time.monotonic())
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None


def _feed(fd: int, view: memoryview) -> memoryview:
    """Write what the pipe takes now; what is left (empty: all of it went in)."""
    if not view:
        return view
    try:
        written = os.write(fd, view[:_READ])
    except BlockingIOError:
        return view
    except BrokenPipeError:
        written = len(view)  # it stopped reading (or never did): its choice
    return view[written:]


def _close(fd: int) -> int:
    """Close `fd` if it is one; -1, which the wait's loop never sees as an event."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    return -1


def _drain(fd: int, tail: bytearray) -> bool:
    """Copy what stderr has to ours; False at its end."""
    try:
        chunk = os.read(fd, _READ)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    _keep(tail, chunk)
    _write_all(2, chunk)
    return True


def _drain_available(fd: int, tail: bytearray) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, _READ)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        _keep(tail, chunk)
        _write_all(2, chunk)


def _keep(tail: bytearray, chunk: bytes) -> None:
    tail += chunk
    if len(tail) > STDERR_TAIL:
        del tail[:len(tail) - STDERR_TAIL]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:
            return  # our output is gone (the master died); the tail still has it


def _kill_group(pgid: int, sig: int) -> None:
    """Signal the command's session. Its id stays reserved while any member lives, so
    this cannot reach an unrelated process even after the command itself was reaped."""
    try:
        os.killpg(pgid, sig)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise


def _exit_error(returncode: int) -> tuple[str, str]:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return "KilledBySignal", f"command was killed by {name}"
    return "ExitStatus", f"command exited with status {returncode}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _jsonable(value: Any) -> Any:
    """Headers as JSON for QSUPERVISOR_HEADERS: what JSON has no type for, as text."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
