"""Entry point of a worker process, called in the child right after its leader forks.

Threads: the main thread owns signals, timers (job timeout, max_age, stop deadline) and
the channel to the master; the I/O thread owns the broker connection; the job thread runs
the handler. The main thread never touches pika except through the consumer's thread-safe
methods, so a signal can never land inside pika's own locks.
"""

from __future__ import annotations

import importlib
import os
import selectors
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from setproctitle import setproctitle

from qsupervisor import __version__, ipc, logs, procutil
from qsupervisor.broker.delays import DelayChain
from qsupervisor.channel import CRASH_ANSWER_BOUND, Ev, Op
from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.exit_codes import (
    ABANDON_GRACE,
    EXIT_HANDLER_IMPORT,
    EXIT_INTERNAL_ERROR,
    EXIT_JOB_TIMEOUT,
    EXIT_STOP_TIMEOUT,
)
from qsupervisor.stats_segment import Stats
from qsupervisor.worker.command import CommandUnavailable, JobCommand
from qsupervisor.worker.consumer import Consumer, WorkerEvents
from qsupervisor.worker.jobs import JobCall, JobRunner, handler_call

log = logs.get("qsupervisor.worker")

# The master may hold its answer while a worker that still had the message is killed and
# reaped (up to CRASH_ANSWER_BOUND); an answer that came later would be lost, and the
# lost run with it.
CRASH_QUERY_TIMEOUT = CRASH_ANSWER_BOUND + 5.0


@dataclass(frozen=True)
class WorkerSpec:
    program: ProgramConfig
    daemon: DaemonConfig
    slot: int
    max_jobs: int  # this worker's own limit, jitter already drawn; 0 = never
    log_format: str


def load_handler(spec: str) -> Callable[[Any], Any]:
    module_name, _, attr_path = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


class MasterChannel(WorkerEvents):
    """The worker's end of its socketpair with the master: events out, and the one
    question a worker asks (how often did this message kill a worker?)."""

    def __init__(self, sock: socket.socket, wake: int) -> None:
        self.sock = sock
        self._wake = wake
        self._lock = threading.Lock()
        self._answers: dict[int, tuple[threading.Event, list]] = {}
        self._next = 0

    def send(self, msg: ipc.Message) -> None:
        with self._lock:
            try:
                ipc.send(self.sock, msg)
            except OSError:
                pass  # the master is gone; the main thread notices the EOF

    def ready(self, node: str) -> None:
        self.send({"ev": Ev.READY, "node": node, "version": __version__})

    def broker_lost(self, error: str) -> None:
        self.send({"ev": Ev.BROKER_LOST, "error": error})

    def broker_back(self, node: str) -> None:
        self.send({"ev": Ev.BROKER_BACK, "node": node})

    def unsettled(self, message_id: str, how: str) -> None:
        self.send({"ev": Ev.UNSETTLED, "id": message_id, "how": how})

    def job_started(self) -> None:
        try:
            os.write(self._wake, b"J")  # the main thread arms the job timeout
        except OSError:
            pass

    def crashes(self, message_id: str) -> tuple[int, str]:
        """Called from the job thread; the main thread delivers the answer."""
        event: threading.Event = threading.Event()
        box: list = []
        with self._lock:
            self._next += 1
            rid = self._next
            self._answers[rid] = (event, box)
        self.send({"op": Op.CRASHES, "rid": rid, "id": message_id})
        event.wait(CRASH_QUERY_TIMEOUT)
        with self._lock:
            self._answers.pop(rid, None)
        return (int(box[0]), str(box[1])) if box else (0, "")

    def answer(self, msg: ipc.Message) -> None:
        with self._lock:
            waiting = self._answers.get(int(msg.get("rid", -1)))
        if waiting is not None:
            waiting[1].extend([msg.get("count", 0), msg.get("how", "")])
            waiting[0].set()


def run(spec: WorkerSpec, channel: socket.socket, stats_fd: int) -> NoReturn:
    code = EXIT_INTERNAL_ERROR
    try:
        code = _run(spec, channel, stats_fd)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _run(spec: WorkerSpec, channel_sock: socket.socket, stats_fd: int) -> int:
    program = spec.program
    setproctitle(f"qsupervisord: {program.name} worker {spec.slot}")
    procutil.reset_signals()
    procutil.die_with_parent(signal.SIGTERM)
    logs.configure(spec.log_format, spec.daemon.log_level)
    logs.bind(program=program.name, slot=spec.slot)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    channel = MasterChannel(channel_sock, wake_w)
    command: JobCommand | None = None
    if program.command:
        command = JobCommand(program)
        try:
            command.check()
        except CommandUnavailable as exc:
            log.error("cannot run the command", command=program.command[0], error=str(exc))
            channel.send({"ev": Ev.EXITING, "reason": "command not found", "error": str(exc)})
            return EXIT_HANDLER_IMPORT
        call: JobCall = command
    else:
        try:
            call = handler_call(load_handler(program.handler))
        except Exception as exc:
            log.error("cannot import the handler", handler=program.handler,
                      error=traceback.format_exc())
            channel.send({"ev": Ev.EXITING, "reason": "handler import failed",
                          "error": f"{program.handler}: {type(exc).__name__}: {exc}"})
            return EXIT_HANDLER_IMPORT
    stats = Stats(stats_fd)
    # The main thread hears of job starts only to arm `timeout`; without one, a wake-up per
    # job would cost a pipe write and a thread switch per message for nothing. A command
    # keeps its own timeout: it can be stopped, so the worker goes on after it.
    arm_timeout = bool(program.timeout) and command is None
    runner = JobRunner(call, program, stats, channel.crashes,
                       on_start=channel.job_started if arm_timeout else lambda: None)
    chain = DelayChain.for_program(program, spec.daemon.delay)
    consumer = Consumer(spec.daemon.broker, program, chain, spec.max_jobs, runner, channel,
                        name=f"qsupervisor {program.name} worker {spec.slot} pid {os.getpid()}",
                        after_job=lambda: _memory_exceeded(program.max_memory))
    supervisor = _Supervisor(consumer, channel, stats, program, wake_r, wake_w)
    reason = supervisor.run()
    if reason == "timeout":
        return EXIT_JOB_TIMEOUT
    if reason is None:
        log.error("stop_timeout passed with a job still running; leaving it to the broker")
        if command is not None:
            command.kill()  # nothing of the job outlives its worker
        return EXIT_STOP_TIMEOUT
    channel.send({"ev": Ev.EXITING, "reason": reason})
    return 0


def _memory_exceeded(limit: int) -> str | None:
    if limit and (procutil.read_rss(os.getpid()) or 0) > limit:
        return "max_memory"
    return None


class _Supervisor:
    """The main thread: waits for signals, the master and deadlines."""

    def __init__(self, consumer: Consumer, channel: MasterChannel, stats: Stats,
                 program: ProgramConfig, wake_r: int, wake_w: int) -> None:
        self.consumer = consumer
        self.channel = channel
        self.stats = stats
        self.program = program
        self.wake_r = wake_r
        self.wake_w = wake_w
        self.done = threading.Event()
        self.result: list = []
        self.stop_deadline: float | None = None
        self.stopping = False
        self.age_deadline = time.monotonic() + program.max_age if program.max_age else None
        self.job_deadline: float | None = None
        self.job_started: float | None = None
        self.selector = selectors.DefaultSelector()

    def run(self) -> str | None:
        """Run the consumer until it stops; its reason, "timeout", or None if it did not
        stop within stop_timeout."""
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, lambda *_: None)  # the wake-up fd carries the signal number
        threading.Thread(target=self._consume, name="io", daemon=True).start()
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.selector.register(self.channel.sock, selectors.EVENT_READ)
        while not self.done.is_set():
            deadlines = [d for d in (self.stop_deadline, self.age_deadline, self.job_deadline) if d]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in self.selector.select(timeout):
                if key.fileobj == self.wake_r:
                    self._on_wake(os.read(self.wake_r, 512))
                else:
                    self._on_master()
            outcome = self._check_deadlines()
            if outcome is not None:
                return None if outcome == "stop_timeout" else outcome
        if not self.result:
            raise RuntimeError("the consumer thread failed")
        return self.result[0]

    def _consume(self) -> None:
        try:
            self.result.append(self.consumer.run())
        except BaseException:
            log.error("the consumer failed", error=traceback.format_exc())
        finally:
            self.done.set()
            os.write(self.wake_w, b"\0")

    def _stop(self, reason: str, bounded: bool = True) -> None:
        """Stop consuming and finish the job in hand. A stop from outside (signal, master)
        is bounded by stop_timeout; a recycle of our own (max_age) lets the job finish."""
        if not self.stopping:
            self.stopping = True
            self.consumer.request_stop(reason)
            self.age_deadline = None
        if bounded and self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + self.program.stop_timeout

    def _on_wake(self, data: bytes) -> None:
        if any(b in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) for b in data):
            self._stop("stop")
        if b"J" in data and self.program.timeout:
            snapshot = self.stats.read()
            self.job_started = snapshot.job_started
            if self.job_started is not None:
                elapsed = max(0.0, time.time() - self.job_started)
                self.job_deadline = time.monotonic() + self.program.timeout - elapsed

    def _on_master(self) -> None:
        msg, _fds = ipc.recv(self.channel.sock)
        if msg is None:
            # The master is gone: nobody reads our output any more, so do not block on it.
            self.selector.unregister(self.channel.sock)
            _silence_output()
            self._stop("master gone")
        elif "rid" in msg:
            self.channel.answer(msg)

    def _check_deadlines(self) -> str | None:
        now = time.monotonic()
        if self.job_deadline is not None and now >= self.job_deadline:
            self.job_deadline = None
            if self._job_still_running():
                return self._abandon_job()
        if self.age_deadline is not None and now >= self.age_deadline:
            self._stop("max_age", bounded=False)
        if self.stop_deadline is not None and now >= self.stop_deadline:
            return "stop_timeout"
        return None

    def _job_still_running(self) -> bool:
        snapshot = self.stats.read()
        return snapshot.job_started is not None and snapshot.job_started == self.job_started

    def _abandon_job(self) -> str | None:
        """The handler cannot be interrupted (it may sit in a C call), so the process
        leaves without it once its message is settled as a failed attempt."""
        snapshot = self.stats.read()
        error = f"job ran longer than timeout ({self.program.timeout:g}s)"
        log.error("job timed out; abandoning it and replacing this worker",
                  message_id=snapshot.job_id, timeout=self.program.timeout)
        settled = (self.consumer.abandon_job("timeout", error)
                   and self.consumer.abandon_done.wait(ABANDON_GRACE)
                   and self.consumer.abandon_settled)
        # Unsettled, the message returns to the queue when we exit; the master then counts
        # the timeout as a crash of this message.
        self.channel.send({"ev": Ev.EXITING, "reason": "timeout", "error": error,
                           "settled": bool(settled)})
        return "timeout"


def _silence_output() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
