"""A program's leader (leader/forkserver.py): its preload, its report of the files it
loaded, its wait for the broker, and its loop (spawn, reap, retire, queue_stats, SIGTERM,
the master going away).

The leader's entry calls os._exit, installs signal handlers, closes every fd it does not
own and reaps with waitpid(-1), so the tests that run it whole fork a child that calls the
real entry (forkserver.run); the test plays the master over the real SEQPACKET socketpair
and reaps the child. The broker and the workers' fork are the seam (LeaderDeps): a
scripted broker, and stand-in workers whose behaviour the spawn's slot number picks. The
handlers that touch neither signals nor fds are also driven in this process, on a
socketpair.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pika.exceptions
import pytest

from qsupervisor import ipc, procutil
from qsupervisor import stats_segment as stats_mod
from qsupervisor.broker.connection import BrokerUnreachable
from qsupervisor.broker.topology import KeptQueue, TopologyError
from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.exit_codes import (
    EXIT_HANDLER_IMPORT,
    EXIT_INTERNAL_ERROR,
    EXIT_PRELOAD_FAILED,
)
from qsupervisor.leader import broker as leader_broker
from qsupervisor.leader import forkserver
from qsupervisor.leader.forkserver import LeaderDeps, LeaderSpec
from qsupervisor.worker.main import WorkerSpec

TIMEOUT = 5.0  # seconds; only ever reached when a test fails

# What a stand-in worker does, chosen by the slot the master spawns it in.
EXITS = 0  # says hello and exits with status 7
OBEYS = 1  # says hello, waits for SIGTERM, says it is stopping and exits 0
STUBBORN = 2  # says hello and ignores SIGTERM: only SIGKILL ends it
FORK_FAILS = 3  # the fork itself fails
EXITS_CODE = 7


def program(**settings: Any) -> ProgramConfig:
    settings.setdefault("handler", "qs_test_unused_handler:handle")
    return ProgramConfig(name="orders", queue="orders", **settings)


def exit_status(code: int) -> int:
    return code << 8


# -- processes ----------------------------------------------------------------------------


class Children:
    """Processes the test forked; whatever is left at teardown is killed and reaped."""

    def __init__(self) -> None:
        self.live: set[int] = set()

    def fork(self, body: Callable[[], None]) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's own coverage, if measured, counts it
            try:
                body()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(98)
        self.live.add(pid)
        return pid

    def adopt(self, pid: int) -> None:
        self.live.add(pid)

    def wait(self, pid: int, timeout: float = TIMEOUT) -> int:
        """The child's waitpid status; a child still running after `timeout` fails the test."""
        pidfd = os.pidfd_open(pid)
        try:
            ready = ipc.readable(pidfd, timeout)
        finally:
            os.close(pidfd)
        if not ready:
            raise AssertionError(f"process {pid} still running after {timeout}s")
        self.live.discard(pid)
        return os.waitpid(pid, 0)[1]

    def kill_all(self) -> None:
        for pid in self.live:
            procutil.signal_pid(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.live.clear()


@pytest.fixture
def children() -> Iterator[Children]:
    procs = Children()
    try:
        yield procs
    finally:
        procs.kill_all()


def recv(sock: socket.socket, timeout: float = TIMEOUT) -> ipc.Message | None:
    """The next message on `sock` (None at end of file); fails the test after `timeout`."""
    ready = ipc.readable(sock, timeout)
    if not ready:
        raise AssertionError(f"nothing received within {timeout}s")
    msg, fds = ipc.recv(sock)
    for fd in fds:
        os.close(fd)
    return msg


def pending(sock: socket.socket) -> list[ipc.Message]:
    """Every message already waiting on `sock`."""
    found = []
    while ipc.readable(sock, 0):
        msg = recv(sock, 0)
        if msg is None:
            break
        found.append(msg)
    return found


def fake_fork_worker(spec: WorkerSpec, channel_fd: int, stats_fd: int) -> int:
    """LeaderDeps.fork_worker for the tests: forks a stand-in worker that reports on its
    channel, as a worker does, and behaves as its slot says."""
    if spec.slot == FORK_FAILS:
        raise OSError(errno.EAGAIN, "fork refused by the test")
    pid = os.fork()
    if pid:
        return pid
    try:  # pragma: no cover - a stand-in worker, not the code under test
        procutil.reset_signals()  # the leader's handlers and wake-up fd
        procutil.die_with_parent(signal.SIGKILL)
        procutil.close_fds_except({channel_fd})
        channel = socket.socket(fileno=channel_fd)
        if spec.slot == OBEYS:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        elif spec.slot == STUBBORN:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ipc.send(channel, {"ev": "hello", "pid": os.getpid(), "max_jobs": spec.max_jobs})
        if spec.slot == EXITS:
            os._exit(EXITS_CODE)
        if spec.slot == OBEYS:
            signal.sigwait({signal.SIGTERM})
            ipc.send(channel, {"ev": "exiting", "reason": "stopped"})
            os._exit(0)
        while True:
            signal.pause()
    finally:
        os._exit(99)


class FakeBroker:
    """The leader's broker work, scripted. declare_topology raises the queued errors, one
    per call, then tells `kept` of each queue in `kept` and succeeds; queue_stats counts
    its reads in "ready", so a cached answer shows."""

    def __init__(self, errors: Sequence[BaseException] = (),
                 kept: Sequence[tuple[str, str]] = ()) -> None:
        self.errors = list(errors)
        self.kept = list(kept)
        self.declared = 0
        self.reads = 0

    def declare_topology(self, program: ProgramConfig, daemon: DaemonConfig,
                         kept: KeptQueue | None) -> None:
        self.declared += 1
        if self.errors:
            raise self.errors.pop(0)
        for queue, why in self.kept:
            assert kept is not None
            kept(queue, why)

    def queue_stats(self, program: ProgramConfig, daemon: DaemonConfig) -> dict:
        self.reads += 1
        return {"ready": self.reads, "consumers": 1, "dead_letter_ready": 0}

    def deps(self, fork_worker: forkserver.ForkWorker | None = fake_fork_worker) -> LeaderDeps:
        return LeaderDeps(declare_topology=self.declare_topology,
                          queue_stats=self.queue_stats, fork_worker=fork_worker)


class RunningLeader:
    """A leader in a forked child, and the master's end of its channel."""

    def __init__(self, pid: int, sock: socket.socket, output: Path, children: Children) -> None:
        self.pid = pid
        self.sock = sock
        self.output_path = output
        self.children = children

    def send(self, fds: Sequence[int] = (), **msg: Any) -> None:
        ipc.send(self.sock, msg, fds)

    def event(self) -> ipc.Message | None:
        return recv(self.sock)

    def expect(self, ev: str) -> ipc.Message:
        msg = self.event()
        assert msg is not None and msg.get("ev") == ev, f"expected {ev!r}, got {msg!r}"
        return msg

    def spawn(self, wid: int, slot: int, max_jobs: int = 0) -> socket.socket:
        """Ask for a worker, as the master does; returns the master's end of its channel."""
        ours, theirs = ipc.socketpair()
        stats_fd = stats_mod.create()
        try:
            self.send([theirs.fileno(), stats_fd], op="spawn", wid=wid, slot=slot,
                      max_jobs=max_jobs)
        finally:
            theirs.close()
            os.close(stats_fd)
        return ours

    def expect_eof(self) -> None:
        msg = self.event()
        assert msg is None, f"expected the leader to close its channel, got {msg!r}"

    def exit_status(self) -> int:
        return self.children.wait(self.pid)

    def output(self) -> str:
        return self.output_path.read_text()


@pytest.fixture
def start_leader(children: Children, tmp_path: Path) -> Iterator[Callable[..., RunningLeader]]:
    socks: list[socket.socket] = []

    def start(prog: ProgramConfig, daemon: DaemonConfig | None = None,
              deps: LeaderDeps | None = None,
              setup: Callable[[], None] = lambda: None) -> RunningLeader:
        daemon = daemon or DaemonConfig(log_level="debug")
        master, leader_end = ipc.socketpair()
        socks.append(master)
        output = tmp_path / f"leader-{len(socks)}.out"
        output_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def body() -> None:  # pragma: no cover - runs in the child
            master.close()
            # pytest's capture replaced sys.stderr; a leader logs to fd 2, as in the daemon.
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            setup()
            forkserver.run(LeaderSpec(prog, daemon, "json"), leader_end, output_fd, deps)

        try:
            pid = children.fork(body)
        finally:
            leader_end.close()
            os.close(output_fd)
        return RunningLeader(pid, master, output, children)

    yield start
    for sock in socks:
        sock.close()


def write_module(directory: Path, name: str, source: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


# -- the leader's entry, in a forked child -------------------------------------------------


MARKER_MODULE = """
import json, os, sys
with open({marker!r}, "w") as f:
    json.dump({{"env": os.environ.get("QS_LEADER_TEST"), "notify": os.environ.get("NOTIFY_SOCKET"),
               "cwd": os.getcwd(), "path0": sys.path[0]}}, f)
"""


def test_the_leader_preloads_reports_its_files_then_is_ready_and_exits_when_retired(
        start_leader: Callable[..., RunningLeader], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lib, workdir, marker = tmp_path / "lib", tmp_path / "work", tmp_path / "marker.json"
    workdir.mkdir()
    first = write_module(lib, "qs_preload_first", MARKER_MODULE.format(marker=str(marker)))
    second = write_module(lib, "qs_preload_second", "import colorsys\n")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")  # only the master's
    prog = program(preload=("qs_preload_first", "qs_preload_second"),
                   environment=(("QS_LEADER_TEST", "yes"),), directory=str(workdir))
    daemon = DaemonConfig(path=(str(lib),), log_level="debug")

    def one_file_per_report() -> None:
        forkserver.FILES_PER_MESSAGE = 1

    leader = start_leader(prog, daemon, FakeBroker().deps(), setup=one_file_per_report)
    reports = [leader.expect("preload_files"), leader.expect("preload_files")]
    assert [r["files"] for r in reports] == [
        [[str(first), os.stat(first).st_mtime]],
        [[str(second), os.stat(second).st_mtime]],
    ]  # in path order, one file a message here; colorsys is the standard library's
    assert leader.expect("ready")["modules"] == 2
    leader.send(op="retire")
    leader.expect_eof()
    assert leader.exit_status() == 0
    seen = json.loads(marker.read_text())
    assert seen == {"env": "yes", "notify": None, "cwd": str(workdir), "path0": str(lib)}
    assert '"leader ready"' in leader.output()


def test_a_preload_that_fails_to_import_is_reported_and_final(
        start_leader: Callable[..., RunningLeader], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_module(lib, "qs_preload_broken", "import qs_preload_missing_dependency\n")
    leader = start_leader(program(preload=("qs_preload_broken",)),
                          DaemonConfig(path=(str(lib),)), FakeBroker().deps())
    failed = leader.expect("preload_failed")
    assert failed["error"] == ("ModuleNotFoundError: No module named "
                               "'qs_preload_missing_dependency'")
    assert "qs_preload_broken.py" in failed["traceback"]
    leader.expect_eof()
    assert leader.exit_status() == exit_status(EXIT_PRELOAD_FAILED)


def test_a_preload_that_raises_import_error_is_reported(
        start_leader: Callable[..., RunningLeader], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_module(lib, "qs_preload_raises", "raise ImportError('needs libfoo')\n")
    leader = start_leader(program(preload=("qs_preload_raises",)),
                          DaemonConfig(path=(str(lib),)), FakeBroker().deps())
    assert leader.expect("preload_failed")["error"] == "ImportError: needs libfoo"
    leader.expect_eof()
    assert leader.exit_status() == exit_status(EXIT_PRELOAD_FAILED)


def test_a_directory_that_cannot_be_entered_fails_the_preload(
        start_leader: Callable[..., RunningLeader], tmp_path: Path) -> None:
    leader = start_leader(program(directory=str(tmp_path / "gone")), deps=FakeBroker().deps())
    assert leader.expect("preload_failed")["error"].startswith("FileNotFoundError: ")
    leader.expect_eof()
    assert leader.exit_status() == exit_status(EXIT_PRELOAD_FAILED)


def test_a_refused_topology_is_final_and_nothing_is_preloaded(
        start_leader: Callable[..., RunningLeader], tmp_path: Path) -> None:
    lib, marker = tmp_path / "lib", tmp_path / "marker.json"
    write_module(lib, "qs_preload_marker", MARKER_MODULE.format(marker=str(marker)))
    broker = FakeBroker(errors=[TopologyError("access refused to queue 'orders'")])
    leader = start_leader(program(preload=("qs_preload_marker",)),
                          DaemonConfig(path=(str(lib),)), broker.deps())
    assert leader.expect("topology_failed") == {"ev": "topology_failed",
                                                "error": "access refused to queue 'orders'"}
    leader.expect_eof()
    assert leader.exit_status() == exit_status(EXIT_PRELOAD_FAILED)
    assert not marker.exists()


def test_the_master_can_retire_a_leader_that_waits_for_the_real_broker(
        children: Children, tmp_path: Path) -> None:
    """fork_leader with the real LeaderDeps: the real declaration, against a port that
    refuses connections (no broker is used), then the master retires the leader."""
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    master, leader_end = ipc.socketpair()
    output_fd = os.open(tmp_path / "leader.out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        port = refusing.getsockname()[1]
        daemon = DaemonConfig(broker=(f"amqp://guest:guest@127.0.0.1:{port}/%2F",))
        pid = forkserver.fork_leader(program(), daemon, "json", leader_end, output_fd)
        children.adopt(pid)
        leader_end.close()
        waiting = recv(master)
        assert waiting is not None and waiting["ev"] == "waiting"
        assert "connection refused" in waiting["error"]
        ipc.send(master, {"op": "retire"})
        assert recv(master) is None
        assert children.wait(pid) == exit_status(EXIT_PRELOAD_FAILED)
    finally:
        os.close(output_fd)
        master.close()
        refusing.close()


def test_an_unexpected_exception_in_the_leader_exits_internal_error(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = start_leader(program(), deps=FakeBroker(errors=[RuntimeError("boom")]).deps())
    leader.expect_eof()
    assert leader.exit_status() == exit_status(EXIT_INTERNAL_ERROR)
    assert "RuntimeError: boom" in leader.output()


# -- the leader's loop, in a forked child --------------------------------------------------


def ready_leader(start_leader: Callable[..., RunningLeader], **settings: Any) -> RunningLeader:
    leader = start_leader(program(**settings), deps=FakeBroker().deps())
    leader.expect("ready")
    return leader


def spawn_obedient(leader: RunningLeader) -> tuple[socket.socket, int]:
    """A worker that obeys SIGTERM, spawned and greeting the test: its channel and pid."""
    channel = leader.spawn(wid=1, slot=OBEYS)
    pid = leader.expect("spawned")["pid"]
    assert recv(channel) == {"ev": "hello", "pid": pid, "max_jobs": 0}
    return channel, pid


def test_a_spawned_worker_is_reported_and_so_is_its_exit_status(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = ready_leader(start_leader)
    channel = leader.spawn(wid=11, slot=EXITS, max_jobs=250)
    try:
        spawned = leader.expect("spawned")
        hello = recv(channel)
        assert hello == {"ev": "hello", "pid": spawned["pid"], "max_jobs": 250}
        assert spawned["wid"] == 11
        assert leader.expect("exited") == {"ev": "exited", "pid": spawned["pid"],
                                           "status": exit_status(EXITS_CODE)}
    finally:
        channel.close()
    leader.send(op="spawn", wid=12, slot=EXITS)  # no fds: nothing to spawn with
    leader.send(op="retire")
    leader.expect_eof()  # and no event for the spawn without fds
    assert leader.exit_status() == 0
    assert "unexpected message from the master" in leader.output()


def test_a_failed_fork_is_reported_and_the_leader_goes_on(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = ready_leader(start_leader)
    leader.spawn(wid=5, slot=FORK_FAILS).close()
    failed = leader.expect("spawn_failed")
    assert failed["wid"] == 5 and "fork refused by the test" in failed["error"]
    leader.send(op="queue_stats", rid=1)  # still serving
    assert leader.expect("queue_stats")["rid"] == 1
    leader.send(op="retire")
    leader.expect_eof()
    assert leader.exit_status() == 0


def test_a_retired_leader_waits_for_its_last_worker(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = ready_leader(start_leader)
    channel, pid = spawn_obedient(leader)
    try:
        leader.send(op="retire")
        leader.send(op="queue_stats", rid=3)  # answered: the leader is still there
        assert leader.expect("queue_stats")["rid"] == 3
        os.kill(pid, signal.SIGTERM)  # the master stops its workers itself
        assert recv(channel) == {"ev": "exiting", "reason": "stopped"}
    finally:
        channel.close()
    assert leader.expect("exited") == {"ev": "exited", "pid": pid, "status": 0}
    leader.expect_eof()
    assert leader.exit_status() == 0


def test_queue_depths_are_read_at_most_once_a_second(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = ready_leader(start_leader)
    for rid in (1, 2):
        leader.send(op="queue_stats", rid=rid)
    answers = [leader.expect("queue_stats"), leader.expect("queue_stats")]
    assert answers == [{"ev": "queue_stats", "rid": rid, "ready": 1, "consumers": 1,
                        "dead_letter_ready": 0} for rid in (1, 2)]
    leader.send(op="retire")
    leader.expect_eof()
    assert leader.exit_status() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_the_workers_and_then_the_leader(
        start_leader: Callable[..., RunningLeader], sig: int) -> None:
    leader = ready_leader(start_leader)
    channel, pid = spawn_obedient(leader)
    try:
        os.kill(leader.pid, sig)
        assert recv(channel) == {"ev": "exiting", "reason": "stopped"}
    finally:
        channel.close()
    assert leader.expect("exited") == {"ev": "exited", "pid": pid, "status": 0}
    leader.expect_eof()
    assert leader.exit_status() == 0
    assert '"reason": "SIGTERM"' in leader.output()


def test_a_worker_that_ignores_sigterm_is_killed_at_stop_timeout(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = ready_leader(start_leader, stop_timeout=0.1)
    channel = leader.spawn(wid=1, slot=STUBBORN)
    try:
        pid = leader.expect("spawned")["pid"]
        assert recv(channel) == {"ev": "hello", "pid": pid, "max_jobs": 0}
        asked = time.monotonic()
        os.kill(leader.pid, signal.SIGTERM)
        exited = leader.expect("exited")
        waited = time.monotonic() - asked
    finally:
        channel.close()
    assert exited == {"ev": "exited", "pid": pid, "status": signal.SIGKILL}
    assert 0.09 <= waited < 1.0  # at stop_timeout: not before, nor much after
    leader.expect_eof()
    assert leader.exit_status() == 0


def test_when_the_master_goes_the_leader_stops_its_workers_and_exits(
        start_leader: Callable[..., RunningLeader]) -> None:
    leader = ready_leader(start_leader)
    channel, pid = spawn_obedient(leader)
    try:
        leader.sock.close()
        assert recv(channel) == {"ev": "exiting", "reason": "stopped"}
    finally:
        channel.close()
    assert leader.exit_status() == 0
    # Its output pipe has no reader any more: from then on it writes to /dev/null.
    assert "leader shutting down" not in leader.output()


def test_a_real_worker_whose_handler_cannot_be_imported(
        start_leader: Callable[..., RunningLeader]) -> None:
    """The default fork_worker: the leader forks the real worker entry, which reports the
    failed import on its channel; the leader reaps it and reports its status."""
    leader = start_leader(program(handler="qs_absent_handler_module:handle"),
                          deps=FakeBroker().deps(fork_worker=None))
    leader.expect("ready")
    channel = leader.spawn(wid=1, slot=0)
    try:
        pid = leader.expect("spawned")["pid"]
        assert recv(channel) == {
            "ev": "exiting", "reason": "handler import failed",
            "error": ("qs_absent_handler_module:handle: ModuleNotFoundError: "
                      "No module named 'qs_absent_handler_module'")}
    finally:
        channel.close()
    assert leader.expect("exited") == {"ev": "exited", "pid": pid,
                                       "status": exit_status(EXIT_HANDLER_IMPORT)}
    leader.send(op="retire")
    leader.expect_eof()
    assert leader.exit_status() == 0


# -- the handlers, in this process --------------------------------------------------------


class InProcessLeader:
    """A _Leader built in this process (its main() never called), the master's end of its
    channel, and the broker it talks to."""

    def __init__(self, broker: FakeBroker,
                 fork_worker: forkserver.ForkWorker | None = None) -> None:
        self.master, self.leader_sock = ipc.socketpair()
        self.broker = broker
        self.forks: list[tuple[WorkerSpec, int, int]] = []
        self.leader = forkserver._Leader(
            LeaderSpec(program(), DaemonConfig(), "json"), self.leader_sock, -1,
            broker.deps(fork_worker=fork_worker or self._fork))
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.leader_sock, selectors.EVENT_READ)

    def _fork(self, spec: WorkerSpec, channel_fd: int, stats_fd: int) -> int:
        assert os.fstat(channel_fd) and os.fstat(stats_fd)  # open while the fork runs
        self.forks.append((spec, channel_fd, stats_fd))
        return 4242

    def send(self, fds: Sequence[int] = (), **msg: Any) -> None:
        ipc.send(self.master, msg, fds)

    def handle(self) -> None:
        """One message from the master, as the loop reads it."""
        self.leader._on_master(self.selector)

    def events(self) -> list[ipc.Message]:
        return pending(self.master)

    def close(self) -> None:
        self.selector.close()
        self.master.close()
        self.leader_sock.close()


@pytest.fixture
def in_process() -> Iterator[Callable[..., InProcessLeader]]:
    made: list[InProcessLeader] = []

    def make(broker: FakeBroker | None = None,
             fork_worker: forkserver.ForkWorker | None = None) -> InProcessLeader:
        made.append(InProcessLeader(broker or FakeBroker(), fork_worker))
        return made[-1]

    yield make
    for leader in made:
        leader.close()


def peer_closed(sock: socket.socket, timeout: float = 1.0) -> bool:
    """True once every copy of the other end of `sock` is closed (it reads end of file)."""
    ready = ipc.readable(sock, timeout)
    return bool(ready) and sock.recv(1) == b""


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def test_the_leader_waits_for_an_unreachable_broker_and_retries(
        in_process: Callable[..., InProcessLeader]) -> None:
    broker = FakeBroker(errors=[BrokerUnreachable("cannot connect: connection refused"),
                                pika.exceptions.AMQPConnectionError("reset"),
                                OSError("no route to host")],
                        kept=[("orders.failed", "declared by an earlier release")])
    rig = in_process(broker)
    ours, theirs = socket.socketpair()
    # Whatever the master says (but retire) ends a wait early, so the test needs no sleep;
    # an fd sent along is closed, not leaked.
    rig.send([theirs.fileno()], op="queue_stats", rid=1)
    theirs.close()
    rig.send(op="queue_stats", rid=2)
    rig.send(op="queue_stats", rid=3)
    assert rig.leader._declare_topology() is True
    assert broker.declared == 4
    assert rig.events() == [
        {"ev": "waiting", "error": "cannot connect: connection refused"},
        {"ev": "waiting", "error": "reset"},
        {"ev": "waiting", "error": "no route to host"},
        {"ev": "queue_kept", "queue": "orders.failed", "why": "declared by an earlier release"},
    ]
    assert peer_closed(ours)  # the leader closed the fd it was sent
    ours.close()


@pytest.mark.parametrize("master_says", ["retire", "goodbye"])
def test_a_leader_waiting_for_the_broker_gives_up_when_retired_or_orphaned(
        in_process: Callable[..., InProcessLeader], master_says: str) -> None:
    broker = FakeBroker(errors=[BrokerUnreachable("refused")] * 2)
    rig = in_process(broker)
    if master_says == "retire":
        rig.send(op="retire")
    else:
        rig.master.shutdown(socket.SHUT_WR)
    assert rig.leader._declare_topology() is False
    assert broker.declared == 1
    assert rig.events() == [{"ev": "waiting", "error": "refused"}]


def test_a_refused_declaration_is_not_retried(in_process: Callable[..., InProcessLeader]) -> None:
    broker = FakeBroker(errors=[TopologyError("inequivalent arg 'x-queue-type'")])
    rig = in_process(broker)
    assert rig.leader._declare_topology() is False
    assert broker.declared == 1
    assert rig.events() == [{"ev": "topology_failed", "error": "inequivalent arg 'x-queue-type'"}]


@pytest.mark.parametrize("max_age, reads", [(60.0, [1, 1]), (0.0, [1, 2])])
def test_queue_stats_answers_are_cached_for_their_max_age(
        in_process: Callable[..., InProcessLeader], monkeypatch: pytest.MonkeyPatch,
        max_age: float, reads: list[int]) -> None:
    monkeypatch.setattr(forkserver, "QUEUE_STATS_MAX_AGE", max_age)
    rig = in_process()
    for rid in (7, 8):
        rig.send(op="queue_stats", rid=rid)
        rig.handle()
    assert [(e["ev"], e["rid"], e["ready"]) for e in rig.events()] == [
        ("queue_stats", 7, reads[0]), ("queue_stats", 8, reads[1])]


def test_a_spawn_hands_the_fds_to_the_worker_and_closes_the_leaders_copies(
        in_process: Callable[..., InProcessLeader]) -> None:
    rig = in_process()
    ours, theirs = ipc.socketpair()
    stats_fd = stats_mod.create()
    rig.send([theirs.fileno(), stats_fd], op="spawn", wid=9, slot=4, max_jobs=17)
    theirs.close()
    os.close(stats_fd)
    rig.handle()
    [(spec, channel_fd, leader_stats_fd)] = rig.forks
    assert (spec.slot, spec.max_jobs, spec.log_format) == (4, 17, "json")
    assert spec.program == rig.leader.spec.program and spec.daemon == rig.leader.spec.daemon
    assert closed(channel_fd) and closed(leader_stats_fd)
    assert rig.leader.children == {4242}
    assert rig.events() == [{"ev": "spawned", "wid": 9, "pid": 4242}]
    assert peer_closed(ours)  # nobody holds the worker's end any more
    ours.close()


def test_a_fork_that_fails_is_reported_and_its_fds_closed(
        in_process: Callable[..., InProcessLeader]) -> None:
    forks: list[tuple[int, int]] = []

    def refuse(spec: WorkerSpec, channel_fd: int, stats_fd: int) -> int:
        forks.append((channel_fd, stats_fd))
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    rig = in_process(fork_worker=refuse)
    ours, theirs = ipc.socketpair()
    stats_fd = stats_mod.create()
    rig.send([theirs.fileno(), stats_fd], op="spawn", wid=3, slot=0)
    theirs.close()
    os.close(stats_fd)
    rig.handle()
    assert rig.events() == [{"ev": "spawn_failed", "wid": 3,
                             "error": "[Errno 11] Resource temporarily unavailable"}]
    assert all(closed(fd) for fd in forks[0])
    assert rig.leader.children == set()
    assert peer_closed(ours)
    ours.close()


@pytest.mark.parametrize("msg", [{"op": "spawn", "wid": 1, "slot": 0}, {"op": "reload"},
                                 {"ev": "garbage"}])
def test_an_unexpected_message_is_dropped_with_its_fds(
        in_process: Callable[..., InProcessLeader], msg: ipc.Message) -> None:
    rig = in_process()
    ours, theirs = socket.socketpair()
    rig.send([theirs.fileno()], **msg)  # a spawn with one fd is as unexpected
    theirs.close()
    rig.handle()
    assert rig.events() == [] and rig.forks == []
    assert not rig.leader.retiring
    assert peer_closed(ours)
    ours.close()


def test_retire_marks_the_leader_retiring(in_process: Callable[..., InProcessLeader]) -> None:
    rig = in_process()
    rig.send(op="retire")
    rig.handle()
    assert rig.leader.retiring and not rig.leader.master_gone
    assert rig.events() == []


@pytest.fixture
def signalled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The signals the leader sends its children, recorded instead of sent."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(forkserver.procutil, "signal_pid", lambda pid, sig: sent.append((pid, sig)))
    return sent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_signals_every_worker_once_and_arms_the_kill(
        in_process: Callable[..., InProcessLeader], signalled: list[tuple[int, int]],
        sig: int) -> None:
    rig = in_process()
    rig.leader.children = {101, 102}
    rig.leader._on_signals(bytes([signal.SIGCHLD]))  # a worker exited: nothing to stop
    assert signalled == [] and rig.leader.kill_at is None and not rig.leader.retiring
    before = time.monotonic()
    rig.leader._on_signals(bytes([signal.SIGCHLD, sig]))
    assert sorted(signalled) == [(101, signal.SIGTERM), (102, signal.SIGTERM)]
    assert rig.leader.retiring
    kill_at = rig.leader.kill_at
    assert kill_at is not None and before + 30.0 <= kill_at <= time.monotonic() + 30.0
    rig.leader._on_signals(bytes([signal.SIGTERM]))  # again: already stopping
    assert len(signalled) == 2 and rig.leader.kill_at == kill_at


@pytest.fixture
def stdio_restored() -> Iterator[None]:
    """fds 1 and 2 as they were, after a test that points them at /dev/null."""
    saved = (os.dup(1), os.dup(2))
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def test_an_orphaned_leader_stops_its_workers_and_stops_writing_output(
        in_process: Callable[..., InProcessLeader], signalled: list[tuple[int, int]],
        stdio_restored: None) -> None:
    rig = in_process()
    rig.leader.children = {101}
    rig.master.close()
    rig.handle()
    assert rig.leader.master_gone and rig.leader.retiring
    assert signalled == [(101, signal.SIGTERM)]
    assert rig.leader.kill_at is not None
    assert rig.leader_sock not in [key.fileobj for key in rig.selector.get_map().values()]
    devnull = os.stat(os.devnull)
    for fd in (1, 2):
        assert os.fstat(fd).st_rdev == devnull.st_rdev  # nobody reads the output pipe


def test_events_stop_once_the_master_is_gone(in_process: Callable[..., InProcessLeader]) -> None:
    rig = in_process()
    rig.master.close()
    rig.leader._send({"ev": "ready", "modules": 0})
    assert rig.leader.master_gone
    rig.leader._send({"ev": "ready", "modules": 0})  # not even tried


# -- the preload report, and the process set-up ----------------------------------------


@pytest.fixture
def forget_modules() -> Iterator[list[str]]:
    """Names of modules a test imports, removed from sys.modules afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


def test_preloaded_files_are_the_new_modules_outside_the_standard_library(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]) -> None:
    kept = write_module(tmp_path, "qs_report_kept")
    gone = write_module(tmp_path, "qs_report_gone")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = set(sys.modules)
    forget_modules.extend(["qs_report_kept", "qs_report_gone"])
    importlib.import_module("qs_report_kept")
    importlib.import_module("qs_report_gone")
    gone.unlink()  # its file went away since: no mtime to report
    importlib.import_module("colorsys")
    # As if these were imported since `before`: the standard library's, and one without
    # a file, are still left out.
    files = forkserver.preloaded_files(before - {"colorsys", "sys"})
    assert files == {str(kept): os.stat(kept).st_mtime}


def test_modules_in_a_site_packages_inside_the_stdlib_directory_are_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: list[str]) -> None:
    stdlib = tmp_path / "lib" / "python3"
    site = stdlib / "site-packages"
    app = write_module(site, "qs_app_in_site_packages")
    layout = {"stdlib": str(stdlib), "platstdlib": str(stdlib), "purelib": str(site),
              "platlib": str(site)}  # a Python installed without a virtualenv
    monkeypatch.setattr(forkserver.sysconfig, "get_paths", lambda *a, **k: dict(layout))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    before = set(sys.modules)
    forget_modules.append("qs_app_in_site_packages")
    importlib.import_module("qs_app_in_site_packages")
    assert str(app) in forkserver.preloaded_files(before)


def test_prepare_process_sets_the_environment_directory_and_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # restored afterwards, as are the rest
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("QS_PREPARE_A", "old")
    monkeypatch.delenv("QS_PREPARE_B", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    already = sys.path[-1]
    prog = program(environment=(("QS_PREPARE_A", "1"), ("QS_PREPARE_B", "2")),
                   directory=str(workdir))
    forkserver.prepare_process(prog, DaemonConfig(path=("/opt/app/a", "/opt/app/b", already)))
    assert "NOTIFY_SOCKET" not in os.environ
    assert (os.environ["QS_PREPARE_A"], os.environ["QS_PREPARE_B"]) == ("1", "2")
    assert os.getcwd() == str(workdir)
    assert sys.path[:2] == ["/opt/app/a", "/opt/app/b"]
    assert sys.path.count(already) == 1  # already there: not added twice


# -- leader/broker.py against a port nobody answers on --------------------------------------


@pytest.fixture
def refused_broker() -> Iterator[DaemonConfig]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        port = sock.getsockname()[1]
        yield DaemonConfig(broker=(f"amqp://guest:guest@127.0.0.1:{port}/%2F",))
    finally:
        sock.close()


def test_queue_stats_says_why_the_depths_are_unknown(refused_broker: DaemonConfig) -> None:
    port = refused_broker.broker[0].split(":")[3].split("/")[0]
    assert leader_broker.queue_stats(program(), refused_broker) == {
        "error": f"cannot connect to the broker at amqp://guest@127.0.0.1:{port}/%2F: "
                 "connection refused"}


def test_declaring_on_an_unreachable_broker_is_retryable(refused_broker: DaemonConfig) -> None:
    with pytest.raises(BrokerUnreachable, match="connection refused"):
        leader_broker.declare_topology(program(), refused_broker)
