"""The master process: owns the programs, the control socket and the loop.

Signal handlers only record (the loop's wake-up fd does that); `handle_<signal>` methods
act on them between events, so no handler ever runs in the middle of a state change.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

from setproctitle import setproctitle

from qsupervisor import logs, procutil, systemd
from qsupervisor.config import Config, ConfigError, DaemonConfig, Problem, load_config
from qsupervisor.config.diff import ConfigDiff, diff_configs
from qsupervisor.control import protocol
from qsupervisor.master import fleet
from qsupervisor.master.commands import dispatch
from qsupervisor.master.control_server import Connection, ControlServer, PeerPolicy
from qsupervisor.master.handover import State
from qsupervisor.master.herald import HeraldLink
from qsupervisor.master.host import ChildOwner
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.metrics import Collector
from qsupervisor.master.metrics_server import MetricsServer
from qsupervisor.master.output import ProgramOutput
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.reconfigure import UpdatePlan, UpdateResult, plan_update
from qsupervisor.master.reexec import BLOCKED, ReExec, StartedWith
from qsupervisor.master.system import Clock, Processes
from qsupervisor.master.totals import ProgramTotals
from qsupervisor.states import ProgramState

log = logs.get("qsupervisor.master")
# How long the master waits at exit for its herald to end after SIGTERM (it closes one
# broker connection); a herald stuck longer is left to systemd or init.
HERALD_EXIT_WAIT = 5.0

SIGNAL_NAMES = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGQUIT: "quit",
                signal.SIGHUP: "hup", signal.SIGUSR1: "usr1", signal.SIGUSR2: "usr2",
                signal.SIGCHLD: "chld"}


class Waiter:
    """A reply owed to a client once `check` returns a result (not None)."""

    def __init__(self, check: Callable[[], dict[str, Any] | None],
                 reply: Callable[[dict[str, Any]], None]) -> None:
        self.check = check
        self.reply = reply


class Master:
    def __init__(self, config: Config, log_format: str, server: ControlServer,
                 reopen_logs: Callable[[], None], processes: Processes,
                 clock: Clock | None = None, metrics: MetricsServer | None = None,
                 started_with: StartedWith | None = None) -> None:
        self.config = config
        self.daemon = config.daemon
        self.started_with = started_with or StartedWith.of(config.daemon)
        self.log_format = log_format
        self.server = server
        self.reopen_logs = reopen_logs
        self.processes = processes
        self.loop = EventLoop(clock)
        self.programs: dict[str, ProgramRuntime] = {}
        self.outputs: dict[str, ProgramOutput] = {}
        self.pids: dict[int, ChildOwner] = {}
        self.waiters: list[Waiter] = []
        # Per program name, for the daemon's lifetime: counters survive the program's
        # update, removal and return (totals.py).
        self.totals: dict[str, ProgramTotals] = {}
        self.metrics = metrics
        self.started = self.loop.clock.time()
        self.stopping = False
        self.exit_code = 0
        self.herald = HeraldLink(self, lambda: fleet.summary(
            self.programs.values(), self.daemon, self.started, self.loop.clock))
        self.reexec = ReExec(self)

    # -- Host interface for programs ------------------------------------------------------

    def track_pid(self, pid: int, owner: ChildOwner) -> None:
        self.pids[pid] = owner

    def forget_pid(self, pid: int) -> None:
        self.pids.pop(pid, None)

    def changed(self) -> None:
        if self.waiters:
            self.loop.call_when_idle(self._check_waiters)

    def output_fd(self, program: str) -> int:
        return self.outputs[program].write_fd

    # -- running --------------------------------------------------------------------------

    def run(self, resumed: State | None = None) -> int:
        """Start the programs and serve until shut down; `resumed`: take over the state an
        earlier image of this process handed over through a re-exec (reexec.py)."""
        setproctitle(f"qsupervisord: master [{self.config.path}]")
        procutil.become_subreaper()
        _, after = procutil.raise_open_files_limit()
        self.loop.handle_signals(SIGNAL_NAMES, self._on_signal)
        if resumed is not None:  # blocked by the old image for the exec; handled from now on
            signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)
        self.server.start(self.loop, lambda conn, req: dispatch(self, conn, req))
        if self.metrics is not None:
            self.metrics.start(self.loop, Collector(self).scrape)
        if resumed is not None:
            try:
                self.reexec.resume(resumed)
            except Exception:
                # The bounded failure: this process exits, its leaders see their parent
                # die and stop as on any master death (each worker finishes its job),
                # and systemd (Restart=on-failure) starts the service afresh.
                log.exception("re-exec hand-over failed: the new code cannot take over; "
                              "the leaders and workers stop as on a master death")
                raise
            self.handle_chld()  # children that exited during the exec
        else:
            for program in self.config.programs.values():
                self.add_program(program.name, autostart=program.autostart)
            self.herald.start()
            log.info("qsupervisord started", config=self.config.path, socket=self.server.path,
                     programs=list(self.programs), open_files=after)
            systemd.notify("READY=1\nSTATUS=running")
        while not (self.stopping and self._all_stopped()):
            self.loop.run_once()
        self._finish()
        return self.exit_code

    def _finish(self) -> None:
        self._check_waiters()
        deadline = self.loop.clock.monotonic() + 2.0  # let final replies reach their clients
        while (any(c.pending_output for c in self.server.connections.values())
               and self.loop.clock.monotonic() < deadline):
            self.loop.run_once()
        # Client connections stay open until the process exits: a `shutdown --wait` reads
        # to EOF, which then means the daemon is really gone.
        self.server.stop_listening()
        if self.metrics is not None:
            self.metrics.close()
        self.herald.stop()
        # Reap the herald before leaving: under systemd, a process still in the cgroup when
        # the main one exits is killed (SIGKILL), and a stop that kills is a failed stop.
        deadline = self.loop.clock.monotonic() + HERALD_EXIT_WAIT
        while self.herald.pid is not None and self.loop.clock.monotonic() < deadline:
            self.loop.run_once(max_wait=0.1)
        for output in self.outputs.values():
            output.close()
        log.info("qsupervisord stopped")

    def _all_stopped(self) -> bool:
        return all(p.state in (ProgramState.STOPPED, ProgramState.FATAL) and not p.live_workers()
                   and not p.old_leaders and p.leader is None for p in self.programs.values())

    def add_program(self, name: str, autostart: bool) -> ProgramRuntime:
        if name not in self.outputs:  # else: re-added while its old self still stops
            output = ProgramOutput(name, self.daemon.log_dir, self.daemon.log_max_size,
                                   self.daemon.log_backups)
            self.outputs[name] = output
            self.loop.add_reader(output.read_fd, output.on_readable)
        program = ProgramRuntime(self.config.programs[name], self,
                                 self.totals.setdefault(name, ProgramTotals()))
        self.programs[name] = program
        if autostart:
            program.start()
        return program

    def remove_program(self, name: str) -> None:
        """Drop a stopped program's bookkeeping; its output file stays for reading."""
        self.programs.pop(name, None)
        output = self.outputs.pop(name, None)
        if output is not None:
            self.loop.remove_reader(output.read_fd)
            output.on_readable()
            output.close()

    # -- signals --------------------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        name = SIGNAL_NAMES.get(signal.Signals(sig))
        if name is not None:
            getattr(self, f"handle_{name}")()

    def handle_term(self) -> None:
        self.shutdown(fast=False)

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.shutdown(fast=True)

    def handle_hup(self) -> None:
        if self.stopping:  # as the update command is refused: a shutdown stays one
            log.warning("SIGHUP ignored: the daemon is shutting down")
            return
        try:
            self.update(None)
        except ConfigError:
            pass  # logged by update(); the running configuration stays as it was

    def handle_usr1(self) -> None:
        self.reopen()

    def handle_usr2(self) -> None:
        self.reexec.request(None, None, reload_all=False)

    def handle_chld(self) -> None:
        while True:
            exited = self.processes.reap()
            if exited is None:
                return
            pid, status = exited
            owner = self.pids.pop(pid, None)
            if owner is not None:
                owner.child_exited(pid, status)
            self.changed()

    # -- operations used by commands ----------------------------------------------------

    def shutdown(self, fast: bool) -> None:
        if not self.stopping:
            log.info("shutting down", fast=fast)
            # STATUS is what `systemctl status` shows while the jobs in hand finish.
            systemd.notify("STOPPING=1\nSTATUS=stopping: "
                           + ("killing the workers" if fast else "workers finish their jobs"))
        self.stopping = True
        if fast:
            self.herald.stop()
        for program in self.programs.values():
            program.stop("shutdown")
            if fast:
                program.kill_all()
        self.changed()

    def reopen(self) -> None:
        self.reopen_logs()
        for output in self.outputs.values():
            output.reopen()
        self.herald.reopen()
        log.info("log files reopened")

    def reread(self) -> ConfigDiff:
        """Load and validate the file again; raises ConfigError and changes nothing."""
        return diff_configs(self.config, load_config(self.config.path))

    def update(self, names: list[str] | None) -> UpdateResult:
        """Apply the edited file (`names`: only those programs). Raises ConfigError
        (nothing changes) or UnknownPrograms."""
        systemd.notify("RELOADING=1\nSTATUS=applying the configuration")
        try:
            try:
                new = load_config(self.config.path)
            except ConfigError as exc:
                log.error("configuration not applied; the daemon runs on as it was",
                          errors=[str(problem) for problem in exc.problems])
                raise
            plan = plan_update(self.config, new, names or None)
            self._prepare(plan)
            self._apply(plan)
            return plan.result
        finally:
            systemd.notify("READY=1\nSTATUS=running")

    def _prepare(self, plan: UpdatePlan) -> None:
        """What could still fail, done before anything changes: the output directory of
        programs added (a new log_dir is created as at start-up)."""
        daemon = plan.daemon or self.daemon
        if not plan.added:
            return
        try:
            os.makedirs(daemon.log_dir, exist_ok=True)
        except OSError as exc:
            problem = Problem(self.config.path, None, "qsupervisord.log_dir",
                              f"cannot create {daemon.log_dir}: {exc.strerror}")
            log.error("configuration not applied; the daemon runs on as it was",
                      errors=[str(problem)])
            raise ConfigError([problem]) from None

    def _apply(self, plan: UpdatePlan) -> None:
        old_daemon, self.config = self.daemon, plan.config
        if plan.daemon is not None:
            self._apply_daemon_settings(old_daemon, plan.daemon)
            self.daemon = plan.daemon
            # The herald reads node_name and the interval from each summary; only its
            # connection depends on a setting it was started with.
            if old_daemon.broker != plan.daemon.broker:
                self.herald.restart()
            if old_daemon.fleet != plan.daemon.fleet:
                self.herald.reschedule()
        for warning in plan.result.warnings:
            log.warning("setting not applied in place", detail=warning)
        for name in plan.removed:
            self.retire_program(name)
        for name in plan.added:
            self.add_program(name, autostart=plan.config.programs[name].autostart)
        for name in plan.changed:
            self.programs[name].apply_config(plan.config.programs[name])
        for name in plan.scaled:
            self.programs[name].apply_bounds(plan.config.programs[name])
        log.info("configuration applied", changes=list(plan.result.changes),
                 warnings=list(plan.result.warnings))
        self.changed()

    def _apply_daemon_settings(self, old: DaemonConfig, new: DaemonConfig) -> None:
        if (old.allow_users, old.allow_groups) != (new.allow_users, new.allow_groups):
            self.server.policy = PeerPolicy.from_names(new.allow_users, new.allow_groups)
        if old.socket_mode != new.socket_mode:
            os.chmod(self.server.path, new.socket_mode)
        if old.log_level != new.log_level:
            logs.set_level(new.log_level)  # programs get it through their new leaders

    def retire_program(self, name: str) -> None:
        """Stop a program removed from the file, then forget it (unless a program of the
        same name was added back meanwhile)."""
        program = self.programs[name]
        program.stop("removed")

        def forget(_result: dict[str, Any]) -> None:
            if self.programs.get(name) is program:
                self.remove_program(name)

        self.wait_for(lambda: {} if program.state is ProgramState.STOPPED else None, forget)

    # -- waiters ----------------------------------------------------------------------------

    def wait_for(self, check: Callable[[], dict[str, Any] | None],
                 reply: Callable[[dict[str, Any]], None]) -> None:
        result = check()
        if result is not None:
            reply(result)
        else:
            self.waiters.append(Waiter(check, reply))

    def _check_waiters(self) -> None:
        pending = []
        for waiter in self.waiters:
            result = waiter.check()
            if result is None:
                pending.append(waiter)
            else:
                waiter.reply(result)
        self.waiters = pending

    def reply_later(self, conn: Connection, req_id: Any,
                    check: Callable[[], dict[str, Any] | None]) -> None:
        self.wait_for(check, lambda result: conn.send(protocol.ok(req_id, result)))

