"""`qsupervisorctl reexec` and SIGUSR2: the master replaces its own code in place.

Same pid (systemd's MainPID, the pidfile and every leader's parent stay), same control
socket, same children. The steps, each of which can refuse with nothing changed:

1. Settle: wait up to SETTLE_WAIT for what cannot be handed over to clear: messages
   queued to a leader or the herald, a crash question waiting for a worker's exit, a
   program being removed, a queue reading a `status` waits for. A daemon shutting down,
   or running a configuration applied in part, is not re-executed.
2. Pre-flight: a child runs the new code with `--check-resume`: it imports every tier
   (master, leader, worker, herald), reads a snapshot of the state and parses the applied
   configuration, then exits. Its failure (a broken install) is reported and the old
   master carries on.
3. Exec: the state is written to a memfd; clients whose commands still wait get an
   error (their effect goes on: status shows it); every descriptor the state names is
   made inheritable, signals are blocked (their mask and pending set survive the exec),
   and the master execs `python -c BOOTSTRAP --resume FD`. The requester's connection
   is handed over and answered by the new image; so is every idle connection.

The new image (`resume`) rebuilds the records, re-arms every timer at its deadline,
unblocks the signals and serves on. Leaders and workers never notice: their channels are
SOCK_SEQPACKET (no partial message to carry), and what they sent meanwhile waits in the
kernel. With `--all` the new image then reloads every running program with --preload,
one at a time, so that leaders and workers run the new code too.

If the new image dies during the hand-over, the leaders see their parent die and stop as
on any master death (each worker finishes its job), and systemd restarts the service.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

from qsupervisor import __version__, logs, procutil, systemd
from qsupervisor.config import Config, DaemonConfig
from qsupervisor.control import protocol
from qsupervisor.master import handover
from qsupervisor.master.control_server import Connection, ControlServer
from qsupervisor.master.handover import FORMAT, HandoverError, State
from qsupervisor.master.herald import HeraldLink
from qsupervisor.master.host import Host
from qsupervisor.master.loop import Timer
from qsupervisor.master.metrics_server import MetricsServer
from qsupervisor.master.output import ProgramOutput
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.totals import ProgramTotals

log = logs.get("qsupervisor.master")

SETTLE_WAIT = 1.0  # seconds to wait for what cannot be handed over to clear
SETTLE_POLL = 0.02
ROLL_AFTER = 0.1  # seconds the new image serves before `--all` begins its first reload
PREFLIGHT_TIMEOUT = 60.0  # seconds for the check child (it imports pika and the handlers' tiers)
PREFLIGHT_OUTPUT_MAX = 16384  # bytes of its stderr kept for the reply
# Blocked from just before the exec until the new image has its handlers: a SIGTERM
# meanwhile would kill the master with its default action. Pending ones are delivered then.
BLOCKED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGCHLD)
PARTIAL_CONFIG = ("the running configuration was applied in part (update PROGRAM...), which no "
                  "file holds for the new code to read: apply the whole file with "
                  "`qsupervisorctl update`, then re-exec")
WAITED_ERROR = ("the daemon re-executed itself (qsupervisorctl reexec) while this command "
                "waited; what the command started goes on: see status")


# The new image's entry point. Not `-m`: that puts the working directory first on
# sys.path, and a master started in the foreground from a directory holding a
# `qsupervisor` (a checkout) would re-execute into that instead of the installed code.
BOOTSTRAP = "import sys; del sys.path[0]; from qsupervisor.daemon.main import main; sys.exit(main())"


def resume_argv(config_path: str, flag: str, fd: int) -> list[str]:
    """The command the master execs (`--resume`) or checks with (`--check-resume`)."""
    return [sys.executable, "-c", BOOTSTRAP, "-c", config_path, flag, str(fd)]


def write_state(state: State) -> int:
    fd = os.memfd_create("qsupervisor-handover", os.MFD_CLOEXEC)
    os.write(fd, json.dumps(state).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_state(fd: int) -> State:
    """The state a master handed over; HandoverError if this code cannot take it."""
    with os.fdopen(fd, "rb") as stream:
        state = json.loads(stream.read())
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise HandoverError(f"hand-over format {found!r}; this qsupervisor {__version__} "
                            f"reads format {FORMAT}: restart the daemon instead")
    return state


def _standard_fds_open() -> None:
    """The new image must find 0, 1 and 2 open, or its first files take those numbers
    (and Python's sys.stdout is None). A detached daemon may have them closed, or marked
    close-on-exec: /dev/null in their place."""
    for fd in (0, 1, 2):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


@dataclass(frozen=True)
class StartedWith:
    """The settings a running daemon cannot change (reconfigure.RESTART_ONLY): the files
    and socket it opened at start. They come through a re-exec as they are, whatever the
    applied configuration says now: the new image serves the same socket and log, and
    removes the same pidfile and socket file at exit."""

    socket: str
    pidfile: str
    logfile: str
    log_format: str

    @classmethod
    def of(cls, daemon: DaemonConfig) -> StartedWith:
        return cls(daemon.socket, daemon.pidfile, daemon.logfile, daemon.log_format)


class Master(Host, Protocol):
    """What a re-exec reads and rebuilds of the master (arbiter.py's Master): the host of
    its programs, and more."""

    config: Config
    server: ControlServer
    metrics: MetricsServer | None
    herald: HeraldLink
    programs: dict[str, ProgramRuntime]
    outputs: dict[str, ProgramOutput]
    totals: dict[str, ProgramTotals]
    started: float
    started_with: StartedWith
    stopping: bool

    def wait_for(self, check: Callable[[], dict[str, Any] | None],
                 reply: Callable[[dict[str, Any]], None]) -> None: ...


class ReExec:
    def __init__(self, master: Master) -> None:
        self.master = master
        self.step: str | None = None  # settling | checking | None
        self._requester: tuple[Connection, Any] | None = None
        self._reload_all = False
        self._deadline = 0.0
        self._child: int | None = None
        self._child_output = bytearray()
        self._child_pipe: int | None = None
        self._child_timer: Timer | None = None
        self._snapshot_fd: int | None = None
        self._checked: Config | None = None  # the configuration the check parsed
        # `--all`: programs still to reload --preload after the exec, the first one begun.
        self.rolling: list[str] = []
        self.rolling_begun = False
        self.rolling_names: list[str] = []  # every program the rolling reloads, for the reply
        self._rolling_reply: tuple[Connection, Any] | None = None
        self._rolling_result: dict[str, Any] = {}  # the re-exec's own reply, for --all's

    # -- the request ------------------------------------------------------------------

    def request(self, conn: Connection | None, req_id: Any, reload_all: bool) -> None:
        """Start a re-exec; the requester (None for SIGUSR2) is answered by the new
        image, or here with the reason it was refused."""
        why = None
        if self.step is not None:
            why = f"a re-exec is already in progress ({self.step})"
        elif self.master.stopping:
            why = "the daemon is shutting down"
        elif not self.master.config.texts:
            why = PARTIAL_CONFIG
        if why is not None:  # the log says it too: SIGUSR2 has nobody else to tell
            log.error("re-exec refused", why=why,
                      by="qsupervisorctl" if conn is not None else "SIGUSR2")
            self._answer_error(conn, req_id, why)
            return
        self._requester = (conn, req_id) if conn is not None else None
        self._reload_all = reload_all
        log.info("re-exec requested", by="qsupervisorctl" if conn is not None else "SIGUSR2",
                 all=reload_all)
        self._settle(then=self._preflight)

    def _settle(self, then: Callable[[], None]) -> None:
        self.step = "settling"
        self._deadline = self.master.loop.clock.monotonic() + SETTLE_WAIT
        self._poll_settled(then)

    def _poll_settled(self, then: Callable[[], None]) -> None:
        why = self.unsettled()
        if why is None:
            then()
        elif self.master.loop.clock.monotonic() >= self._deadline:
            self._refuse(f"the daemon did not settle within {SETTLE_WAIT:g} s: {why}; "
                         "nothing was changed, try again")
        else:
            self.master.loop.call_later(SETTLE_POLL, lambda: self._poll_settled(then))

    def unsettled(self) -> str | None:
        """What cannot be handed over right now (None: everything can)."""
        master = self.master
        if master.stopping:
            return "the daemon is shutting down"
        for name, program in master.programs.items():
            if name not in master.config.programs:
                return f"program {name} is being removed (it stops first)"
            why = program.settled()
            if why is not None:
                return why
        return master.herald.settled()

    # -- step 2: the pre-flight check ---------------------------------------------------

    def _preflight(self) -> None:
        self.step = "checking"
        try:
            self._checked = self.master.config
            self._snapshot_fd = write_state(self.capture(None))
            os.set_inheritable(self._snapshot_fd, True)
            read_end, write_end = os.pipe()
        except (OSError, ValueError) as exc:
            self._refuse(f"cannot write the state to hand over: {exc}")
            return
        argv = resume_argv(self.master.config.path, "--check-resume", self._snapshot_fd)
        try:
            self._child = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=[
                (os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)])
        except OSError as exc:
            os.close(read_end)
            self._refuse(f"cannot start {argv[0]} to check the new code: {exc.strerror}")
            return
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        self._child_pipe = read_end
        self._child_output.clear()
        self.master.track_pid(self._child, self)
        self.master.loop.add_reader(read_end, self._read_child)
        self._child_timer = self.master.loop.call_later(PREFLIGHT_TIMEOUT, self._child_overdue)

    def _read_child(self) -> None:
        assert self._child_pipe is not None
        try:
            data = os.read(self._child_pipe, 65536)
        except BlockingIOError:
            return
        if not data:
            self.master.loop.remove_reader(self._child_pipe)
            return
        room = PREFLIGHT_OUTPUT_MAX - len(self._child_output)
        self._child_output += data[:max(0, room)]

    def _child_overdue(self) -> None:
        if self._child is not None:
            log.error("the re-exec check did not finish; killing it", pid=self._child,
                      waited=PREFLIGHT_TIMEOUT)
            self.master.processes.signal(self._child, signal.SIGKILL)

    def child_exited(self, pid: int, status: int) -> None:
        """The check child's exit (the master's reaper calls its owner)."""
        if pid != self._child:
            return
        self._child = None
        if self._child_timer is not None:
            self._child_timer.cancel()
            self._child_timer = None
        if self._child_pipe is not None:
            self._read_child()
            self.master.loop.remove_reader(self._child_pipe)
            os.close(self._child_pipe)
            self._child_pipe = None
        self._close_snapshot()
        said = self._child_output.decode("utf-8", "replace").strip()
        if status != 0:
            last = said.splitlines()[-1] if said else "no output"
            log.error("re-exec refused: the new code failed its check; the daemon runs on",
                      exit=procutil.describe_status(status), output=said)
            self._refuse(f"the new code failed its check ({procutil.describe_status(status)}): "
                         f"{last}; the daemon runs on unchanged (its log has the whole output)")
            return
        self._settle(then=self._exec)

    def _close_snapshot(self) -> None:
        if self._snapshot_fd is not None:
            os.close(self._snapshot_fd)
            self._snapshot_fd = None

    # -- step 3: the exec ---------------------------------------------------------------

    def _exec(self) -> None:
        master = self.master
        if master.config is not self._checked:
            # An `update` applied another configuration while the check ran: the new
            # code must prove it parses that one too.
            log.info("re-exec: the configuration changed during the check; checking again")
            self._preflight()
            return
        requester = self._requester[0] if self._requester is not None else None
        rolling = ([name for name, p in master.programs.items() if p.running]
                   if self._reload_all else self.rolling)
        connections = list(master.server.connections.values())
        for conn in connections:  # what the sockets take now; an idle one's rest goes over
            conn.flush_now()
        try:
            state = self.capture(requester, rolling)
            state["clients"] = [idle for conn in connections
                                if conn is not requester and (idle := conn.idle_state())]
            state_fd = write_state(state)
        except (OSError, ValueError) as exc:
            self._refuse(f"cannot write the state to hand over: {exc}")
            return
        log.info("re-executing", version=__version__, pid=os.getpid(), all=self._reload_all)
        systemd.notify("RELOADING=1\nSTATUS=re-executing qsupervisor")
        # Told only now that the state is written; the exec closes their connections.
        for conn in connections:
            if conn is not requester and conn.outstanding:
                conn.send(protocol.error(None, protocol.FAILED, WAITED_ERROR))
                conn.flush_now()
        inherited = handover.descriptors(state) + [state_fd]
        for fd in inherited:
            os.set_inheritable(fd, True)
        argv = resume_argv(master.config.path, "--resume", state_fd)
        _standard_fds_open()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        # A signal that arrived since the loop last looked sits in the wake-up pipe, which
        # the exec closes: raised again, it waits (blocked) for the new image's handlers.
        for sig in master.loop.take_signals():
            os.kill(os.getpid(), sig)
        try:
            os.execv(argv[0], argv)
        except OSError as exc:  # the old image is intact: carry on
            signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
            for fd in inherited:
                os.set_inheritable(fd, False)
            os.close(state_fd)
            self._refuse(f"cannot execute {argv[0]}: {exc.strerror}")

    def capture(self, requester: Connection | None, rolling: list[str] | None = None) -> State:
        master = self.master
        rolling = self.rolling if rolling is None else rolling
        return {
            "format": FORMAT, "version": __version__, "pid": os.getpid(),
            "exec_at": master.loop.clock.monotonic(),
            "config": {"path": master.config.path, "texts": dict(master.config.texts)},
            "started": master.started, "started_with": asdict(master.started_with),
            "control_fd": master.server.sock.fileno(),
            "metrics_fd": master.metrics.sock.fileno() if master.metrics is not None else None,
            # Each file where it was opened, with its rotation settings then (an update
            # changes them for programs added later only).
            "outputs": {name: {"output_fds": [o.read_fd, o.write_fd], "path": o.path,
                               "max_size": o.max_size, "backups": o.backups}
                        for name, o in master.outputs.items()},
            "totals": {name: t.export_state() for name, t in master.totals.items()},
            "programs": [p.export_state() for p in master.programs.values()],
            "herald": master.herald.export_state(),
            "open_files_started_with": procutil.open_files_started_with(),
            "notify_socket": systemd.notify_socket(),
            "requester_fd": requester.sock.fileno() if requester is not None else None,
            "clients": [],  # the idle connections: added by the exec, not the check
            "requester_id": self._requester[1] if self._requester is not None else None,
            "reload_all": self._reload_all, "rolling": rolling,
            "rolling_begun": self.rolling_begun if rolling is self.rolling else False,
            "rolling_names": (self.rolling_names if rolling is self.rolling else list(rolling)),
        }

    def _refuse(self, why: str) -> None:
        self.step = None
        self._close_snapshot()
        systemd.notify("READY=1\nSTATUS=running")
        log.error("re-exec refused", why=why)
        if self._requester is not None:
            self._answer_error(*self._requester, why)
        self._requester = None

    @staticmethod
    def _answer_error(conn: Connection | None, req_id: Any, why: str) -> None:
        if conn is not None:
            conn.send(protocol.error(req_id, protocol.FAILED, why))

    # -- in the new image -----------------------------------------------------------------

    def resume(self, state: State) -> None:
        """Take over the records the old image handed over, then answer its requester."""
        master = self.master
        procutil.keep_open_files_started_with(state["open_files_started_with"])
        master.started = float(state["started"])
        for name, data in state["totals"].items():
            master.totals.setdefault(name, ProgramTotals()).load_state(data)
        for name, data in state["outputs"].items():
            read_fd, write_fd = data["output_fds"]
            output = ProgramOutput(name, os.path.dirname(data["path"]), int(data["max_size"]),
                                   int(data["backups"]), pipe=(int(read_fd), int(write_fd)))
            master.outputs[name] = output
            master.loop.add_reader(output.read_fd, output.on_readable)
        for data in state["programs"]:
            name = data["name"]
            program = ProgramRuntime(master.config.programs[name], master,
                                     master.totals.setdefault(name, ProgramTotals()))
            master.programs[name] = program
            program.load_state(data)
        master.herald.load_state(state["herald"])
        took = master.loop.clock.monotonic() - float(state["exec_at"])
        log.info("qsupervisord re-executed", previous=state["version"], version=__version__,
                 pid=os.getpid(), took_ms=round(took * 1000, 1), programs=list(master.programs))
        systemd.notify("READY=1\nSTATUS=running")
        for client in state["clients"]:
            conn = master.server.adopt(handover.adopt_socket(int(client["sock"])))
            conn.take_buffers(client["rbuf"].encode("latin-1"), client["wbuf"].encode("latin-1"))
        requester = None
        if state["requester_fd"] is not None:
            conn = master.server.adopt(handover.adopt_socket(int(state["requester_fd"])))
            conn.outstanding += 1  # its reply is owed, even if it has shut down its writing
            requester = (conn, state["requester_id"])
        result = {"version": __version__, "previous": state["version"], "pid": os.getpid(),
                  "took_ms": round(took * 1000, 1)}
        self.rolling = [str(name) for name in state["rolling"]]
        self.rolling_begun = bool(state["rolling_begun"])
        self.rolling_names = [str(name) for name in state["rolling_names"]]
        if self.rolling:
            self._rolling_reply = requester
            self._rolling_result = result
            # After the clients that connected during the exec are answered: the first
            # reload forks a leader, and the new image imports the leader tier for it.
            master.loop.call_later(ROLL_AFTER, self._roll_next)
        elif requester is not None:
            if state["reload_all"]:  # --all with no program running: none to reload
                result["programs"] = {}
            requester[0].send(protocol.ok(requester[1], result))

    def _roll_next(self) -> None:
        """`--all`: reload --preload the next program; the next starts once it is steady
        (capacity kept as in any reload: each old worker stops when its successor runs)."""
        master = self.master
        while self.rolling:
            program = master.programs.get(self.rolling[0])
            if program is None or not program.running:
                self.rolling.pop(0)
                self.rolling_begun = False
                continue
            if not self.rolling_begun:
                log.info("re-exec --all: reloading with --preload", program=program.name)
                program.reload(preload=True)
                self.rolling_begun = True
            self._wait_steady(program)
            return
        self._rolled_all()

    def _wait_steady(self, program: ProgramRuntime) -> None:
        self.master.wait_for(lambda: {} if program.steady() or not program.running else None,
                             lambda _result: self._rolled())

    def _rolled(self) -> None:
        if self.rolling:
            self.rolling.pop(0)
        self.rolling_begun = False
        self._roll_next()

    def _rolled_all(self) -> None:
        log.info("re-exec --all: every program runs the new code")
        if self._rolling_reply is not None:
            conn, req_id = self._rolling_reply
            self._rolling_reply = None
            programs = {}
            for name in self.rolling_names:
                program = self.master.programs.get(name)
                problems = program.problems() if program is not None else []
                programs[name] = {"ok": not problems, "problems": problems,
                                  "state": program.state.value if program else "REMOVED"}
            conn.send(protocol.ok(req_id, {**self._rolling_result, "programs": programs}))
