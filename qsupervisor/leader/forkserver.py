"""A program's leader: imports the program's preload list once, then forks workers.

Everything a leader imports is inherited by its workers copy-on-write and stays as it was
when the leader imported it; that is the point (cheap workers) and the trap (stale code),
which is why the leader reports the files it loaded and `status` compares their mtimes.
The leader also reaps its workers and reports their exit statuses, because only a parent
can wait for a child.
"""

from __future__ import annotations

import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import sysconfig
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

import pika.exceptions
from setproctitle import setproctitle

from qsupervisor import __version__, ipc, logs, procutil
from qsupervisor.broker.connection import BrokerUnreachable
from qsupervisor.broker.topology import KeptQueue, TopologyError
from qsupervisor.channel import Ev, Op
from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.exit_codes import EXIT_INTERNAL_ERROR, EXIT_PRELOAD_FAILED
from qsupervisor.leader import broker as leader_broker

if TYPE_CHECKING:
    from qsupervisor.worker.main import WorkerSpec

log = logs.get("qsupervisor.leader")

FILES_PER_MESSAGE = 400  # keeps each preload report well under the socket's buffer
QUEUE_STATS_MAX_AGE = 1.0  # seconds


@dataclass(frozen=True)
class LeaderSpec:
    program: ProgramConfig
    daemon: DaemonConfig
    log_format: str


DeclareTopology = Callable[[ProgramConfig, DaemonConfig, Optional[KeptQueue]], None]
QueueStats = Callable[[ProgramConfig, DaemonConfig], dict[str, Any]]
# (spec, channel fd, stats fd) -> the worker's pid; raises OSError if it cannot fork. The
# worker's process must never return into the leader.
ForkWorker = Callable[["WorkerSpec", int, int], int]


@dataclass(frozen=True)
class LeaderDeps:
    """What a leader reaches beyond its own process: the broker and its workers' fork.
    A seam for tests/unit/test_leader.py, which runs the leader's real loop with a fake
    broker and stand-in workers; the defaults are the real ones."""

    declare_topology: DeclareTopology = leader_broker.declare_topology
    queue_stats: QueueStats = leader_broker.queue_stats
    fork_worker: ForkWorker | None = None  # None: fork and run worker/main.py's run


def fork_leader(program: ProgramConfig, daemon: DaemonConfig, log_format: str,
                sock: socket.socket, output_fd: int) -> int:
    """Fork a leader for `program` and return its pid (the master's `start_leader`); the
    child runs the leader on `sock` and never returns."""
    pid = os.fork()
    if pid == 0:
        run(LeaderSpec(program, daemon, log_format), sock, output_fd)
    return pid


def run(spec: LeaderSpec, sock: socket.socket, output_fd: int,
        deps: LeaderDeps | None = None) -> NoReturn:
    """Called in the master's child right after fork; never returns."""
    code = EXIT_INTERNAL_ERROR
    try:
        code = _Leader(spec, sock, output_fd, deps).main()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def prepare_process(program: ProgramConfig, daemon: DaemonConfig) -> None:
    """Environment, directory, identity and sys.path: shared by the leader and inherited
    by its workers."""
    os.environ.pop("NOTIFY_SOCKET", None)  # only the master talks to systemd
    procutil.restore_open_files_limit()  # the master's raised limit is its own
    os.environ.update(dict(program.environment))
    if program.directory:
        os.chdir(program.directory)
    procutil.drop_privileges(program.user, program.group)
    for entry in reversed(daemon.path):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def preloaded_files(before: set[str]) -> dict[str, float]:
    """Source files of the modules imported since `before`, with their mtimes; the
    standard library is left out, since it only changes with the interpreter. Outside a
    virtualenv site-packages sits inside the standard library's directory
    (/usr/local/lib/python3.X/site-packages): what is installed there is reported."""
    paths = sysconfig.get_paths()
    stdlib = {paths["stdlib"], paths["platstdlib"]}
    installed = {paths["purelib"], paths["platlib"]}

    def under(path: str, roots: set[str]) -> bool:
        return any(path.startswith(root + os.sep) for root in roots)

    files: dict[str, float] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name in before or not path or (under(path, stdlib) and not under(path, installed)):
            continue
        try:
            files[path] = os.stat(path).st_mtime
        except OSError:
            pass
    return files


class _Leader:
    def __init__(self, spec: LeaderSpec, sock: socket.socket, output_fd: int,
                 deps: LeaderDeps | None = None) -> None:
        self.spec = spec
        self.sock = sock
        self.deps = deps or LeaderDeps()
        self._fork_worker: ForkWorker = self.deps.fork_worker or self._fork_real_worker
        self.children: set[int] = set()
        self.retiring = False
        self.master_gone = False
        self.kill_at: float | None = None
        self._stats_cache: tuple[float, dict[str, Any]] | None = None
        # Redirected when main() starts, not here: run() calls main() right away, and a
        # unit test can build a leader in its own process to drive the loop's handlers.
        self._output_fd = output_fd

    def _redirect_output(self, output_fd: int) -> None:
        procutil.close_fds_except({self.sock.fileno(), output_fd})
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)

    def main(self) -> int:
        self._redirect_output(self._output_fd)
        program = self.spec.program
        setproctitle(f"qsupervisord: {program.name} leader")
        procutil.reset_signals()
        procutil.die_with_parent(signal.SIGTERM)
        if program.command:
            # A worker killed during a job (SIGKILL, the OOM killer) leaves its command
            # behind; as subreaper the leader inherits it and ends it (_reap), where it
            # would otherwise run on under init, unsupervised.
            procutil.become_subreaper()
        logs.configure(self.spec.log_format, self.spec.daemon.log_level)
        logs.bind(program=program.name, role="leader")
        try:
            prepare_process(program, self.spec.daemon)
        except BaseException as exc:
            return self._fail(Ev.PRELOAD_FAILED, exc)
        if not self._declare_topology():
            return EXIT_PRELOAD_FAILED
        try:
            before = set(sys.modules)
            for module in program.preload:
                importlib.import_module(module)
        except BaseException as exc:
            return self._fail(Ev.PRELOAD_FAILED, exc)
        files = sorted(preloaded_files(before).items())
        for i in range(0, len(files), FILES_PER_MESSAGE):
            self._send({"ev": Ev.PRELOAD_FILES, "files": files[i:i + FILES_PER_MESSAGE]})
        # Objects that exist now are shared with every worker; keep the collector from
        # touching (and so copying) their pages in the children.
        gc.freeze()
        # The version of qsupervisor this leader (and every worker it forks) runs: after
        # the master re-executes a newer one, status shows who still runs the old code.
        self._send({"ev": Ev.READY, "modules": len(files), "version": __version__})
        log.info("leader ready", preloaded=list(program.preload), files=len(files))
        return self._serve()

    def _fail(self, event: str, exc: BaseException) -> int:
        log.error(event.replace("_", " "), error=traceback.format_exc())
        self._send({"ev": event, "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=20)})
        return EXIT_PRELOAD_FAILED

    def _declare_topology(self) -> bool:
        """Declare the program's queues and delay chain, once per leader. A refusal (a
        conflict with what exists, or no permission) is final: the program goes FATAL
        saying which queue and why. An unreachable broker is waited for, the program
        staying STARTING."""
        delay = 0.5
        while True:
            try:
                self.deps.declare_topology(self.spec.program, self.spec.daemon,
                                           self._queue_kept)
                return True
            except TopologyError as exc:
                log.error("the broker refused the program's queues", error=str(exc))
                self._send({"ev": Ev.TOPOLOGY_FAILED, "error": str(exc)})
                return False
            except (BrokerUnreachable, pika.exceptions.AMQPError, OSError) as exc:
                log.warning("cannot declare the program's queues yet; retrying",
                            error=str(exc), retry_in=delay)
                self._send({"ev": Ev.WAITING, "error": str(exc)})
            if self._master_said_stop(delay):
                return False
            delay = min(delay * 2, 30.0)

    def _queue_kept(self, queue: str, why: str) -> None:
        # The master logs it: the daemon's log (the journal) is where operators look.
        self._send({"ev": Ev.QUEUE_KEPT, "queue": queue, "why": why})

    def _master_said_stop(self, timeout: float) -> bool:
        """Wait up to `timeout` for the master; True if it is gone or retires us."""
        if not ipc.readable(self.sock, timeout):
            return False
        msg, fds = ipc.recv(self.sock)
        for fd in fds:
            os.close(fd)
        return msg is None or msg.get("op") == Op.RETIRE

    # -- the loop -----------------------------------------------------------------------

    def _serve(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ)
        selector.register(self.sock, selectors.EVENT_READ)
        while not (self.children == set() and (self.retiring or self.master_gone)):
            timeout = None if self.kill_at is None else max(0.0, self.kill_at - time.monotonic())
            for key, _ in selector.select(timeout):
                if key.fileobj == wake_r:
                    self._on_signals(os.read(wake_r, 512))
                else:
                    self._on_master(selector)
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                self._signal_children(signal.SIGKILL)
                self.kill_at = None
            self._reap()
        return 0

    def _on_signals(self, data: bytes) -> None:
        if signal.SIGTERM in data or signal.SIGINT in data:
            self._shutdown("SIGTERM")

    def _on_master(self, selector: selectors.BaseSelector) -> None:
        msg, fds = ipc.recv(self.sock)
        if msg is None:
            selector.unregister(self.sock)
            self.master_gone = True
            self._shutdown("master gone")
            return
        op = msg.get("op")
        if op == Op.SPAWN and len(fds) == 2:
            self._spawn(msg, fds[0], fds[1])
        elif op == Op.RETIRE:
            self.retiring = True
        elif op == Op.QUEUE_STATS:
            self._send({"ev": Ev.QUEUE_STATS, "rid": msg.get("rid"), **self._queue_stats()})
        else:
            for fd in fds:
                os.close(fd)
            log.warning("unexpected message from the master", message=msg)

    def _queue_stats(self) -> dict[str, Any]:
        """Queue depths, read at most once a second: a loop of `status` calls (a watch, a
        monitoring agent) must not cost a broker connection each."""
        now = time.monotonic()
        if self._stats_cache is None or now - self._stats_cache[0] >= QUEUE_STATS_MAX_AGE:
            self._stats_cache = (now, self.deps.queue_stats(self.spec.program,
                                                            self.spec.daemon))
        return self._stats_cache[1]

    def _shutdown(self, why: str) -> None:
        """Workers finish the job in hand; whoever is left at stop_timeout is killed."""
        if self.kill_at is not None:
            return
        if why == "master gone":
            # Our output pipe has no reader any more.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
        log.info("leader shutting down", reason=why, workers=len(self.children))
        self.retiring = True
        self._signal_children(signal.SIGTERM)
        self.kill_at = time.monotonic() + self.spec.program.stop_timeout

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            procutil.signal_pid(pid, sig)

    def _spawn(self, msg: ipc.Message, channel_fd: int, stats_fd: int) -> None:
        from qsupervisor.worker import (
            main as worker_main,  # light; imported once anyway
        )

        spec = worker_main.WorkerSpec(
            program=self.spec.program, daemon=self.spec.daemon, slot=int(msg["slot"]),
            max_jobs=int(msg.get("max_jobs", 0)), log_format=self.spec.log_format)
        try:
            pid = self._fork_worker(spec, channel_fd, stats_fd)
        except OSError as exc:
            os.close(channel_fd)
            os.close(stats_fd)
            self._send({"ev": Ev.SPAWN_FAILED, "wid": msg["wid"], "error": str(exc)})
            return
        os.close(channel_fd)
        os.close(stats_fd)
        self.children.add(pid)
        self._send({"ev": Ev.SPAWNED, "wid": msg["wid"], "pid": pid})

    def _fork_real_worker(self, spec: WorkerSpec, channel_fd: int, stats_fd: int) -> int:
        from qsupervisor.worker import main as worker_main

        pid = os.fork()
        if pid == 0:
            self.sock.close()
            procutil.close_fds_except({channel_fd, stats_fd})
            worker_main.run(spec, socket.socket(fileno=channel_fd), stats_fd)
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue  # an orphaned command, inherited as subreaper and ended below
            self.children.discard(pid)
            self._send({"ev": Ev.EXITED, "pid": pid, "status": status})
            if self.spec.program.command:
                self._end_orphans()

    def _end_orphans(self) -> None:
        """Kill what a dead worker's command left: the job is over (its message comes
        back from the broker), and nothing of it may run on unsupervised."""
        orphans = procutil.orphaned_groups(os.getpid(), os.getsid(0), self.children)
        if orphans:
            log.warning("killing what a dead worker's command left running",
                        process_groups=sorted(orphans))
            procutil.kill_groups(orphans)

    def _send(self, msg: ipc.Message) -> None:
        if self.master_gone:
            return
        try:
            ipc.send(self.sock, msg)
        except OSError:
            self.master_gone = True

