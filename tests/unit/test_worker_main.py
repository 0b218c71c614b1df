"""A worker's main thread (worker/main.py): loading the handler, the channel to the
master (events out, the crashes question), the memory check, and the supervisor that
turns signals, the master's requests and deadlines (stop_timeout, max_age, a job's
timeout) into what the consumer is asked to do and why the worker leaves.

The supervisor runs here in this process, on a real socketpair, wake-up pipe and stats
segment, with a fake consumer on its I/O thread; a fixture puts this process's signal
handlers, wake-up fd and stdio back afterwards. The worker's entry (run), which resets
signals and calls os._exit, runs in a forked child.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from qsupervisor import __version__, ipc, procutil
from qsupervisor import stats_segment as stats_mod
from qsupervisor.channel import CRASH_ANSWER_BOUND
from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.exit_codes import (
    EXIT_HANDLER_IMPORT,
    EXIT_INTERNAL_ERROR,
    EXIT_JOB_TIMEOUT,
    EXIT_STOP_TIMEOUT,
)
from qsupervisor.stats_segment import Stats
from qsupervisor.worker import main as worker_main
from qsupervisor.worker.consumer import Consumer
from qsupervisor.worker.main import MasterChannel, WorkerSpec

TIMEOUT = 5.0  # seconds; only ever reached when a test fails


def program(**settings: Any) -> ProgramConfig:
    settings.setdefault("handler", "qs_worker_test_handlers:handle")
    return ProgramConfig(name="orders", queue="orders", **settings)


def recv(sock: socket.socket, timeout: float = TIMEOUT) -> ipc.Message | None:
    ready = ipc.readable(sock, timeout)
    if not ready:
        raise AssertionError(f"nothing received within {timeout}s")
    return ipc.recv_message(sock)


def pending(sock: socket.socket) -> list[ipc.Message]:
    found = []
    while ipc.readable(sock, 0):
        msg = ipc.recv_message(sock)
        if msg is None:
            break
        found.append(msg)
    return found


def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for another thread to make `condition` true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


HANDLERS = """
def handle(payload):
    return ("handle", payload)

class Jobs:
    class Nested:
        @staticmethod
        def run(payload):
            return ("nested", payload)

NOT_CALLABLE = 42
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of handlers, and a package with one, importable for the test."""
    (tmp_path / "qs_worker_test_handlers.py").write_text(HANDLERS)
    package = tmp_path / "qs_worker_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "qs_worker_test_handlers"
    for name in ("qs_worker_test_handlers", "qs_worker_test_pkg", "qs_worker_test_pkg.jobs"):
        sys.modules.pop(name, None)


# -- load_handler -------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("qs_worker_test_handlers:handle", ("handle", 1)),
    ("qs_worker_test_handlers:Jobs.Nested.run", ("nested", 1)),  # a dotted attribute path
    ("qs_worker_test_pkg.jobs:handle", ("handle", 1)),  # a dotted module
])
def test_load_handler_finds_the_callable(handlers: str, spec: str,
                                         expected: tuple[str, int]) -> None:
    assert worker_main.load_handler(spec)(1) == expected


@pytest.mark.parametrize("spec, error, match", [
    ("qs_worker_test_handlers:NOT_CALLABLE", TypeError,
     "qs_worker_test_handlers:NOT_CALLABLE is not callable"),
    ("qs_worker_test_handlers:missing", AttributeError, "missing"),
    ("qs_worker_test_handlers:Jobs.Missing.run", AttributeError, "Missing"),
    ("qs_worker_no_such_module:handle", ModuleNotFoundError, "qs_worker_no_such_module"),
])
def test_load_handler_refuses_what_is_not_a_callable(handlers: str, spec: str,
                                                     error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        worker_main.load_handler(spec)


# -- _memory_exceeded ---------------------------------------------------------------------


def test_memory_is_exceeded_only_past_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_main._memory_exceeded(1) == "max_memory"  # any process has a byte
    assert worker_main._memory_exceeded(1 << 60) is None
    reads: list[int] = []
    monkeypatch.setattr(procutil, "read_rss", lambda pid: reads.append(pid) or None)
    assert worker_main._memory_exceeded(0) is None  # no limit: not even read
    assert reads == []
    assert worker_main._memory_exceeded(1) is None  # RSS unknown: not exceeded
    assert reads == [os.getpid()]


# -- MasterChannel --------------------------------------------------------------------------


class ChannelRig:
    def __init__(self) -> None:
        self.master, self.worker_end = ipc.socketpair()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.channel = MasterChannel(self.worker_end, self.wake_w)

    def close(self) -> None:
        self.master.close()
        self.worker_end.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


@pytest.fixture
def rig() -> Iterator[ChannelRig]:
    made = ChannelRig()
    yield made
    made.close()


def test_the_channel_sends_the_consumers_events_to_the_master(rig: ChannelRig) -> None:
    rig.channel.ready("amqp://guest@rabbit-1:5672/%2F")
    rig.channel.broker_lost("connection reset")
    rig.channel.broker_back("amqp://guest@rabbit-2:5672/%2F")
    rig.channel.unsettled("msg-5", "broker connection lost during the job")
    rig.channel.send({"ev": "exiting", "reason": "max_jobs"})
    assert pending(rig.master) == [{"ev": "ready", "node": "amqp://guest@rabbit-1:5672/%2F",
                                    "version": __version__},
                                   {"ev": "broker_lost", "error": "connection reset"},
                                   {"ev": "broker_back", "node": "amqp://guest@rabbit-2:5672/%2F"},
                                   {"ev": "unsettled", "id": "msg-5",
                                    "how": "broker connection lost during the job"},
                                   {"ev": "exiting", "reason": "max_jobs"}]


def test_the_crashes_question_outwaits_the_masters_longest_answer() -> None:
    # The master may hold its answer until a worker that still had the message is gone.
    assert worker_main.CRASH_QUERY_TIMEOUT > CRASH_ANSWER_BOUND + 1


def test_sending_to_a_master_that_is_gone_is_quiet(rig: ChannelRig) -> None:
    rig.master.close()
    rig.channel.ready("amqp://guest@rabbit-1:5672/%2F")  # EPIPE: the main thread notices the EOF instead


def test_a_job_start_wakes_the_main_thread_and_a_full_pipe_is_no_error(
        rig: ChannelRig) -> None:
    rig.channel.job_started()
    assert os.read(rig.wake_r, 16) == b"J"
    try:
        while True:
            os.write(rig.wake_w, b"x" * 65536)
    except BlockingIOError:
        pass
    rig.channel.job_started()  # the pipe is full: the main thread is awake anyway


def test_the_crashes_question_is_answered_through_the_main_thread(rig: ChannelRig) -> None:
    answers: list[tuple[int, str]] = []
    asker = threading.Thread(target=lambda: answers.append(rig.channel.crashes("msg-1")))
    asker.start()
    try:
        question = recv(rig.master)
        assert question == {"op": "crashes", "rid": 1, "id": "msg-1"}
        rig.channel.answer({"ev": "crashes", "rid": 99, "count": 5, "how": "x"})  # not asked
        rig.channel.answer({"ev": "crashes", "rid": 1, "count": 2, "how": "signal SIGKILL"})
    finally:
        asker.join(TIMEOUT)
    assert answers == [(2, "signal SIGKILL")]


def test_an_unanswered_crashes_question_counts_no_crash(
        rig: ChannelRig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_main, "CRASH_QUERY_TIMEOUT", 0.05)
    started = time.monotonic()
    assert rig.channel.crashes("msg-2") == (0, "")
    assert time.monotonic() - started >= 0.05
    assert recv(rig.master) == {"op": "crashes", "rid": 1, "id": "msg-2"}
    rig.channel.answer({"rid": 1, "count": 3, "how": "late"})  # too late: dropped
    assert rig.channel._answers == {}


# -- the supervisor ----------------------------------------------------------------------


class FakeConsumer:
    """What _Supervisor uses of a Consumer. run() runs `script` on the I/O thread, then
    waits until a stop it obeys (or the test's release) and returns the stop's reason."""

    def __init__(self, script: Callable[[FakeConsumer], str | None] | None = None,
                 obey_stop: bool = True, abandon: bool = True, settle: bool | None = True
                 ) -> None:
        self.script = script
        self.obey_stop = obey_stop
        self.abandon = abandon  # abandon_job can arrange the settlement
        self.settle = settle  # None: the I/O thread never reports back
        self.stop_requests: list[str] = []
        self.abandoned: list[tuple[str, str]] = []
        self.abandon_done = threading.Event()
        self.abandon_settled = False
        self.release = threading.Event()
        self.rig: Any = None  # the SupervisorRig, set by it

    def run(self) -> str:
        if self.script is not None:
            reason = self.script(self)
            if reason is not None:
                return reason
        self.release.wait(TIMEOUT)
        return self.stop_requests[0] if self.stop_requests else "released"

    def request_stop(self, reason: str) -> None:
        self.stop_requests.append(reason)
        if self.obey_stop:
            self.release.set()

    def abandon_job(self, reason: str, error: str) -> bool:
        self.abandoned.append((reason, error))
        if not self.abandon:
            return False
        if self.settle is not None:
            self.abandon_settled = self.settle
            self.abandon_done.set()
        return True


class SupervisorRig:
    def __init__(self, prog: ProgramConfig, consumer: FakeConsumer) -> None:
        self.master, self.worker_end = ipc.socketpair()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.stats_fd = stats_mod.create()
        self.stats = Stats(self.stats_fd)
        self.channel = MasterChannel(self.worker_end, self.wake_w)
        self.consumer = consumer
        consumer.rig = self
        self.supervisor = worker_main._Supervisor(consumer, self.channel, self.stats,  # type: ignore[arg-type]
                                                  prog, self.wake_r, self.wake_w)

    def run(self) -> str | None:
        return self.supervisor.run()

    def close(self) -> None:
        self.consumer.release.set()
        for thread in threading.enumerate():
            if thread.name == "io":
                thread.join(TIMEOUT)
        self.supervisor.selector.close()
        self.stats.close()
        os.close(self.stats_fd)
        self.master.close()
        self.worker_end.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


@pytest.fixture
def supervise() -> Iterator[Callable[..., SupervisorRig]]:
    """Builds supervisors; afterwards this process's signal handlers, wake-up fd and
    stdio are as they were, and the fake consumers' threads have ended."""
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
    handlers = {sig: signal.getsignal(sig) for sig in sigs}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    stdio = (os.dup(1), os.dup(2))  # the master-gone path points 1 and 2 at /dev/null
    made: list[SupervisorRig] = []

    def make(prog: ProgramConfig, consumer: FakeConsumer) -> SupervisorRig:
        made.append(SupervisorRig(prog, consumer))
        return made[-1]

    try:
        yield make
    finally:
        signal.set_wakeup_fd(wakeup)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for fd, saved in zip((1, 2), stdio):
            os.dup2(saved, fd)
            os.close(saved)
        for rig_ in made:
            rig_.close()


def test_the_consumers_own_reason_is_the_workers(supervise: Callable[..., SupervisorRig]) -> None:
    rig_ = supervise(program(), FakeConsumer(lambda c: "max_jobs"))
    assert rig_.run() == "max_jobs"
    assert rig_.consumer.stop_requests == []
    assert pending(rig_.master) == []  # run's caller says why the worker exits


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_a_signal_stops_the_consumer_within_stop_timeout(
        supervise: Callable[..., SupervisorRig], sig: int) -> None:
    def signal_ourselves(c: FakeConsumer) -> None:
        os.kill(os.getpid(), sig)  # the supervisor's handlers are in place by now

    rig_ = supervise(program(max_age=3600.0), FakeConsumer(signal_ourselves))
    assert rig_.run() == "stop"
    assert rig_.consumer.stop_requests == ["stop"]
    assert rig_.supervisor.stop_deadline is not None  # bounded by stop_timeout
    assert rig_.supervisor.age_deadline is None  # no recycle on top of the stop


def test_a_worker_whose_master_is_gone_stops(supervise: Callable[..., SupervisorRig]) -> None:
    rig_ = supervise(program(), FakeConsumer())
    rig_.master.close()
    assert rig_.run() == "master gone"
    assert rig_.consumer.stop_requests == ["master gone"]


def test_a_consumer_that_does_not_stop_within_stop_timeout_is_left(
        supervise: Callable[..., SupervisorRig]) -> None:
    def signal_ourselves(c: FakeConsumer) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handlers are in place by now

    rig_ = supervise(program(stop_timeout=0.05),
                     FakeConsumer(signal_ourselves, obey_stop=False))
    started = time.monotonic()
    assert rig_.run() is None
    assert time.monotonic() - started >= 0.05
    assert rig_.consumer.stop_requests == ["stop"]


def test_max_age_recycles_after_the_job_in_hand_without_a_deadline(
        supervise: Callable[..., SupervisorRig]) -> None:
    def finish_slowly(c: FakeConsumer) -> str:
        until(lambda: bool(c.stop_requests))
        time.sleep(0.06)  # the job in hand takes three stop_timeouts: still let finish
        return c.stop_requests[0]

    rig_ = supervise(program(max_age=0.03, stop_timeout=0.02),
                     FakeConsumer(finish_slowly, obey_stop=False))
    assert rig_.run() == "max_age"
    assert rig_.consumer.stop_requests == ["max_age"]
    assert rig_.supervisor.stop_deadline is None


def start_a_stuck_job(c: FakeConsumer) -> None:
    c.rig.stats.job_started("msg-7")
    c.rig.channel.job_started()  # as the JobRunner's on_start does


@pytest.mark.parametrize("abandon, settle, settled", [
    (True, True, True),  # retried or dead-lettered by the I/O thread
    (True, False, False),  # the I/O thread could not settle it
    (True, None, False),  # the I/O thread did not answer within ABANDON_GRACE
    (False, None, False),  # no connection to settle it on
])
def test_a_job_past_its_timeout_is_abandoned(
        supervise: Callable[..., SupervisorRig], monkeypatch: pytest.MonkeyPatch,
        abandon: bool, settle: bool | None, settled: bool) -> None:
    monkeypatch.setattr(worker_main, "ABANDON_GRACE", 0.02)
    rig_ = supervise(program(timeout=0.05),
                     FakeConsumer(start_a_stuck_job, abandon=abandon, settle=settle))
    started = time.monotonic()
    assert rig_.run() == "timeout"
    assert 0.05 <= time.monotonic() - started < 0.4  # at the timeout, not some time later
    error = "job ran longer than timeout (0.05s)"
    assert rig_.consumer.abandoned == [("timeout", error)]
    assert pending(rig_.master) == [{"ev": "exiting", "reason": "timeout", "error": error,
                                     "settled": settled}]


def test_a_job_that_ends_in_time_is_not_abandoned(
        supervise: Callable[..., SupervisorRig]) -> None:
    def quick_job(c: FakeConsumer) -> str:
        start_a_stuck_job(c)
        until(lambda: c.rig.supervisor.job_deadline is not None)  # the timeout is armed
        c.rig.stats.job_finished(stats_mod.DONE)
        until(lambda: c.rig.supervisor.job_deadline is None)  # and has passed
        return "max_jobs"

    rig_ = supervise(program(timeout=0.05), FakeConsumer(quick_job))
    assert rig_.run() == "max_jobs"
    assert rig_.consumer.abandoned == []
    assert pending(rig_.master) == []


def test_without_a_timeout_a_job_start_arms_nothing(
        supervise: Callable[..., SupervisorRig]) -> None:
    def job(c: FakeConsumer) -> str:
        start_a_stuck_job(c)
        return "max_jobs"

    rig_ = supervise(program(), FakeConsumer(job))
    assert rig_.run() == "max_jobs"
    assert rig_.supervisor.job_deadline is None and rig_.consumer.abandoned == []


def test_the_job_threads_crashes_question_is_answered_by_the_master(
        supervise: Callable[..., SupervisorRig]) -> None:
    answers: list[tuple[int, str]] = []

    def ask(c: FakeConsumer) -> str:
        answers.append(c.rig.channel.crashes("msg-3"))
        return "max_jobs"

    rig_ = supervise(program(), FakeConsumer(ask))

    def master() -> None:
        question = recv(rig_.master)
        assert question is not None
        ipc.send(rig_.master, {"ev": "crashes", "rid": question["rid"], "count": 1,
                               "how": "signal SIGSEGV", "asked": question["id"]})

    answering = threading.Thread(target=master)
    answering.start()
    try:
        assert rig_.run() == "max_jobs"
    finally:
        answering.join(TIMEOUT)
    assert answers == [(1, "signal SIGSEGV")]


def test_a_consumer_that_raises_fails_the_worker(supervise: Callable[..., SupervisorRig]) -> None:
    def fail(c: FakeConsumer) -> str:
        raise ValueError("pika blew up")

    rig_ = supervise(program(), FakeConsumer(fail))
    with pytest.raises(RuntimeError, match="the consumer thread failed"):
        rig_.run()


# -- the worker's entry, in a forked child --------------------------------------------------


class ForkedWorker:
    def __init__(self, pid: int, master: socket.socket, output: Path) -> None:
        self.pid = pid
        self.master = master
        self.output_path = output
        self.reaped = False

    def status(self) -> int:
        pidfd = os.pidfd_open(self.pid)
        try:
            ready = ipc.readable(pidfd, TIMEOUT)
        finally:
            os.close(pidfd)
        assert ready, f"worker {self.pid} still running"
        self.reaped = True
        return os.waitpid(self.pid, 0)[1]

    def output(self) -> str:
        return self.output_path.read_text()


@pytest.fixture
def fork_worker(tmp_path: Path) -> Iterator[Callable[..., ForkedWorker]]:
    made: list[ForkedWorker] = []

    def start(prog: ProgramConfig, setup: Callable[[], None] = lambda: None) -> ForkedWorker:
        master, worker_end = ipc.socketpair()
        stats_fd = stats_mod.create()
        output = tmp_path / f"worker-{len(made)}.out"
        output_fd = os.open(output, os.O_WRONLY | os.O_CREAT, 0o600)
        spec = WorkerSpec(program=prog, daemon=DaemonConfig(), slot=2, max_jobs=0,
                          log_format="json")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                master.close()
                os.dup2(output_fd, 1)
                os.dup2(output_fd, 2)
                sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # not pytest's
                setup()
                worker_main.run(spec, worker_end, stats_fd)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(98)
        worker_end.close()
        os.close(stats_fd)
        os.close(output_fd)
        made.append(ForkedWorker(pid, master, output))
        return made[-1]

    try:
        yield start
    finally:
        for worker in made:
            worker.master.close()
            if not worker.reaped:
                procutil.signal_pid(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)


def test_a_handler_that_cannot_be_imported_ends_the_worker(
        fork_worker: Callable[..., ForkedWorker]) -> None:
    worker = fork_worker(program(handler="qs_worker_absent_module:handle"))
    assert recv(worker.master) == {
        "ev": "exiting", "reason": "handler import failed",
        "error": ("qs_worker_absent_module:handle: ModuleNotFoundError: "
                  "No module named 'qs_worker_absent_module'")}
    assert worker.status() == EXIT_HANDLER_IMPORT << 8
    assert "cannot import the handler" in worker.output()


class StubSupervisor:
    """Stands in for _Supervisor in a forked worker: returns (or raises) what it is told,
    and reports what the worker built for it."""

    outcome: Any = None

    def __init__(self, consumer: Consumer, channel: MasterChannel, stats: Stats,
                 prog: ProgramConfig, wake_r: int, wake_w: int) -> None:
        self.consumer = consumer
        self.channel = channel

    def run(self) -> str | None:
        self.channel.send({"ev": "built", "consumer": type(self.consumer).__name__})
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize("outcome, code, events, says", [
    ("max_jobs", 0, [{"ev": "exiting", "reason": "max_jobs"}], ""),
    ("stop", 0, [{"ev": "exiting", "reason": "stop"}], ""),
    ("timeout", EXIT_JOB_TIMEOUT, [], ""),  # the supervisor said why already
    (None, EXIT_STOP_TIMEOUT, [], "stop_timeout passed with a job still running"),
    (RuntimeError("the consumer thread failed"), EXIT_INTERNAL_ERROR, [],
     "RuntimeError: the consumer thread failed"),
])
def test_the_worker_exits_with_what_its_supervisor_returned(
        fork_worker: Callable[..., ForkedWorker], handlers: str, outcome: Any, code: int,
        events: list[ipc.Message], says: str) -> None:
    def stub() -> None:  # pragma: no cover - the child: nothing leaks into this process
        StubSupervisor.outcome = outcome
        worker_main._Supervisor = StubSupervisor  # type: ignore[misc,assignment]

    worker = fork_worker(program(handler=f"{handlers}:handle"), setup=stub)
    assert recv(worker.master) == {"ev": "built", "consumer": "Consumer"}
    assert worker.status() == code << 8
    assert pending(worker.master) == events
    assert says in worker.output()
