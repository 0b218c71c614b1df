"""Control commands, one small class each. A class's docstring says what it does, for the
people who change it; the one-line help users see is qsupervisorctl's, in control/help.py.

A command either replies at once or registers a waiter on the master, which replies when
the operation is complete (`wait` defaults to true for the commands that change things).
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Optional, Protocol

from qsupervisor import __version__
from qsupervisor.config import Config, ConfigError, DaemonConfig
from qsupervisor.config.diff import ConfigDiff
from qsupervisor.control import protocol
from qsupervisor.control.protocol import ProtocolError
from qsupervisor.master import fleet as fleet_view
from qsupervisor.master import status as status_view
from qsupervisor.master.control_server import Connection
from qsupervisor.master.herald import HeraldLink
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.output import ProgramOutput
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.reconfigure import UnknownPrograms, UpdateResult
from qsupervisor.master.reexec import ReExec
from qsupervisor.states import ProgramState

Args = dict[str, Any]
QUEUE_STATS_WAIT = 1.0  # seconds status waits for the leaders' broker readings
# Seconds `fleet` waits for the herald. Above its connect timeout (herald/main.py), so a
# herald busy reaching a broker node still answers in time.
FLEET_WAIT = 3.0
Check = Callable[[], Optional[dict[str, Any]]]


class Supervisor(Protocol):
    """What the commands see of the master (arbiter.py's Master is the one there is)."""

    programs: dict[str, ProgramRuntime]
    outputs: dict[str, ProgramOutput]
    loop: EventLoop
    config: Config
    daemon: DaemonConfig
    started: float
    stopping: bool
    herald: HeraldLink
    reexec: ReExec

    def reread(self) -> ConfigDiff: ...
    def update(self, names: list[str] | None) -> UpdateResult: ...
    def reopen(self) -> None: ...
    def shutdown(self, fast: bool) -> None: ...
    def reply_later(self, conn: Connection, req_id: Any, check: Check) -> None: ...


class Command:
    name = ""
    takes_wait = False  # `wait`: reply when the change is complete (default) or at once

    def __init__(self, master: Supervisor, conn: Connection, req_id: Any, args: Args) -> None:
        self.master = master
        self.conn = conn
        self.req_id = req_id
        self.args = args
        # Read before the command acts: a refused argument must leave everything as it was.
        self.wait = self.flag("wait", True) if self.takes_wait else False

    def run(self) -> None:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------

    def reply(self, result: Any) -> None:
        self.conn.send(protocol.ok(self.req_id, result))

    def programs(self, key: str = "names", allow_empty: bool = False) -> list[str]:
        names = self.args.get(key) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError(protocol.BAD_REQUEST, f"'{key}' must be a list of program names")
        if "all" in names:
            return list(self.master.programs)
        if not names and not allow_empty:
            raise ProtocolError(protocol.BAD_REQUEST, "name at least one program, or 'all'")
        unknown = [n for n in names if n not in self.master.programs]
        if unknown:
            known = ", ".join(self.master.programs) or "none"
            raise ProtocolError(protocol.NOT_FOUND,
                                f"no such program: {', '.join(unknown)} (programs: {known})")
        return names or list(self.master.programs)

    def flag(self, key: str, default: bool) -> bool:
        value = self.args.get(key, default)
        if not isinstance(value, bool):
            raise ProtocolError(protocol.BAD_REQUEST, f"'{key}' must be true or false")
        return value

    def finish_when_steady(self, names: list[str]) -> None:
        """Reply now, or once every named program is steady (wait=true)."""
        def check() -> dict[str, Any] | None:
            programs = [self.master.programs.get(n) for n in names]
            if not all(p is None or p.steady() for p in programs):
                return None
            return {"programs": {n: _outcome(p) for n, p in zip(names, programs)}}

        if self.wait:
            self.master.reply_later(self.conn, self.req_id, check)
        else:
            self.reply({"programs": {n: {"ok": True, "state": "pending"} for n in names}})


def _outcome(program: Any) -> dict[str, Any]:
    if program is None:
        return {"ok": True, "state": "REMOVED", "problems": []}
    problems = program.problems()
    return {"ok": not problems, "state": program.state.value, "problems": problems}


class Status(Command):
    """Master pid and uptime; per program its state, queue depths, leader, worker totals,
    the workers themselves (unless `workers: false`) and preload freshness."""

    name = "status"

    def run(self) -> None:
        names = self.programs(allow_empty=True)
        self._with_workers = self.flag("workers", True)
        answers: dict[str, dict[str, Any]] = {}
        asked: list[str] = []
        if self.flag("queues", True):
            # Answers come later, from the loop: each callback sees the whole list.
            for n in names:
                if self.master.programs[n].request_queue_stats(self._on_answer(n, answers, asked)):
                    asked.append(n)
        self._names, self._done = names, False
        if not asked:
            self._finish(answers)
        else:  # leaders read the broker; a slow broker costs at most this long
            self.master.loop.call_later(QUEUE_STATS_WAIT, lambda: self._finish(answers))

    def _on_answer(self, name: str, answers: dict[str, dict[str, Any]],
                   asked: list[str]) -> Callable[[dict[str, Any]], None]:
        """The callback for program `name`'s queue depths: the reply goes out once every
        program asked has answered (or QUEUE_STATS_WAIT has passed)."""
        def answered(answer: dict[str, Any]) -> None:
            answers[name] = answer
            if set(answers) >= set(asked):
                self._finish(answers)
        return answered

    def _finish(self, answers: dict[str, dict[str, Any]]) -> None:
        if self._done:
            return
        self._done = True
        programs = {}
        for name in self._names:
            program = self.master.programs.get(name)
            if program is None:
                continue
            entry = status_view.program_status(program, self.master.loop.clock,
                                               self.master.daemon.path,
                                               with_workers=self._with_workers)
            if name in answers:
                entry["queue_stats"] = status_view.queue_view(answers[name],
                                                              entry["summary"]["held"])
            programs[name] = entry
        self.reply({
            "master": status_view.master_status(self.master.started,
                                                self.master.loop.clock.time(),
                                                self.master.config.path,
                                                self.master.herald.pid),
            "programs": programs,
        })


class Start(Command):
    """Start programs (or revive FATAL workers of running ones)."""

    name = "start"
    takes_wait = True

    def run(self) -> None:
        names = self.programs()
        for name in names:
            self.master.programs[name].start()
        self.finish_when_steady(names)


class Stop(Command):
    """Stop programs gracefully: every worker finishes the job in hand."""

    name = "stop"
    takes_wait = True

    def run(self) -> None:
        names = self.programs()
        for name in names:
            self.master.programs[name].stop()
        self.finish_when_steady(names)


class Restart(Command):
    """Stop programs, then start them again (leaders included)."""

    name = "restart"
    takes_wait = True

    def run(self) -> None:
        names = self.programs()
        for name in names:
            self.master.programs[name].restart()
        self.finish_when_steady(names)


class Reload(Command):
    """Rolling replacement of workers so they run fresh handler code; with preload, the
    leader is replaced first so preloaded modules are fresh too."""

    name = "reload"
    takes_wait = True

    def run(self) -> None:
        names = self.programs()
        preload = self.flag("preload", False)
        for name in names:
            self.master.programs[name].reload(preload)
        self.finish_when_steady(names)


class Scale(Command):
    """Change a program's worker count; the highest slots drain when scaling down. On an
    autoscaled program the count is pinned until `auto: true` hands it back to the
    autoscaler."""

    name = "scale"
    takes_wait = True

    def run(self) -> None:
        names = self.programs()
        auto = self.flag("auto", False)
        workers = self.args.get("workers")
        if auto:
            if workers is not None:
                raise ProtocolError(protocol.BAD_REQUEST, "give either 'workers' or 'auto'")
            fixed = [n for n in names if not self.master.programs[n].config.autoscaled]
            if fixed:
                raise ProtocolError(protocol.BAD_REQUEST,
                                    f"not autoscaled (workers is a number, not {{min, max}}): "
                                    f"{', '.join(fixed)}")
            for name in names:
                self.master.programs[name].scale_auto()
            self.reply({"programs": {n: {"ok": True, "state": "auto"} for n in names}})
            return
        if not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= 4096:
            raise ProtocolError(protocol.BAD_REQUEST, "'workers' must be an integer from 0 to 4096")
        for name in names:
            self.master.programs[name].scale(workers)
        self.finish_when_steady(names)


class Reread(Command):
    """Validate the configuration file and show what `update` would change."""

    name = "reread"

    def run(self) -> None:
        try:
            diff = self.master.reread()
        except ConfigError as exc:
            raise ProtocolError(protocol.CONFIG_ERROR, str(exc)) from None
        self.reply({"changes": diff.describe(), "added": list(diff.added),
                    "removed": list(diff.removed), "changed": list(diff.changed),
                    "scaled": list(diff.scaled)})


class Update(Command):
    """Apply the configuration file: add and remove programs, roll changed ones, scale
    those whose only change is `workers`. A file with errors changes nothing."""

    name = "update"
    takes_wait = True

    def run(self) -> None:
        names = self.args.get("names") or None
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) for n in names)):
            raise ProtocolError(protocol.BAD_REQUEST, "'names' must be a list of program names")
        try:
            update = self.master.update(names)
        except ConfigError as exc:
            raise ProtocolError(protocol.CONFIG_ERROR, str(exc)) from None
        except UnknownPrograms as exc:
            raise ProtocolError(protocol.NOT_FOUND, str(exc)) from None

        def check() -> dict[str, Any] | None:
            programs = [self.master.programs.get(n) for n in update.touched]
            if not all(p is None or p.steady() for p in programs):
                return None
            return {"changes": list(update.changes), "warnings": list(update.warnings),
                    "programs": {n: _outcome(p) for n, p in zip(update.touched, programs)}}

        if self.wait:
            self.master.reply_later(self.conn, self.req_id, check)
        else:
            self.reply({"changes": list(update.changes), "warnings": list(update.warnings),
                        "programs": {}})


class Signal(Command):
    """Send a signal to every worker of programs."""

    name = "signal"

    def run(self) -> None:
        names = self.programs()
        raw = str(self.args.get("signal", "")).upper()
        raw = raw if raw.startswith("SIG") or raw.isdigit() else f"SIG{raw}"
        try:
            sig = signal.Signals(int(raw)) if raw.isdigit() else signal.Signals[raw]
        except (KeyError, ValueError):
            raise ProtocolError(protocol.BAD_REQUEST,
                                f"unknown signal {self.args.get('signal')!r}") from None
        self.reply({"signal": sig.name,
                    "pids": {n: self.master.programs[n].signal_workers(sig) for n in names}})


class Pid(Command):
    """The master's pid, or a program's leader and worker pids."""

    name = "pid"

    def run(self) -> None:
        names = self.programs(allow_empty=True) if self.args.get("names") else []
        programs: dict[str, Any] = {}
        for name in names:
            program = self.master.programs[name]
            programs[name] = {"leader": program.leader.pid if program.leader else None,
                              "workers": [w.pid for w in program.live_workers() if w.pid]}
        self.reply({"master": os.getpid(), "programs": programs})


class Tail(Command):
    """Captured output of a program's workers: the last N lines, then follow."""

    name = "tail"

    def run(self) -> None:
        names = self.programs()
        if len(names) != 1:
            raise ProtocolError(protocol.BAD_REQUEST, "tail takes exactly one program")
        output = self.master.outputs[names[0]]
        lines = self.args.get("lines", 10)
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
            raise ProtocolError(protocol.BAD_REQUEST, "'lines' must be an integer >= 0")
        data = output.tail(lines)
        if not self.flag("follow", False):
            self.reply({"path": output.path, "data": data.decode("utf-8", "replace")})
            return
        self.conn.send(protocol.stream(self.req_id, {"data": data.decode("utf-8", "replace")}))

        def follow(chunk: bytes) -> None:
            self.conn.send(protocol.stream(self.req_id, {"data": chunk.decode("utf-8", "replace")}))

        output.followers.append(follow)
        self.conn.on_disconnect.append(lambda: output.followers.remove(follow))


class Reopen(Command):
    """Reopen the daemon's log file and the captured-output files (after logrotate)."""

    name = "reopen"

    def run(self) -> None:
        self.master.reopen()
        self.reply({})


class Shutdown(Command):
    """Stop every program gracefully, then the daemon."""

    name = "shutdown"
    takes_wait = True

    def run(self) -> None:
        self.master.shutdown(fast=False)
        if self.wait:
            def check() -> dict[str, Any] | None:
                done = all(p.state in (ProgramState.STOPPED, ProgramState.FATAL)
                           for p in self.master.programs.values())
                return {"stopped": True} if done else None
            self.master.reply_later(self.conn, self.req_id, check)
        else:
            self.reply({"stopped": False})


class Fleet(Command):
    """Every daemon the herald has heard from on this broker (virtual host), one entry
    per daemon with its programs; `program` keeps the daemons that run it, with it alone.
    Replies within FLEET_WAIT whatever the herald does: `available` false and `error`
    when it did not answer, `connected` false when it answered from an old picture."""

    name = "fleet"

    def run(self) -> None:
        program = self.args.get("program")
        if program is not None and (not isinstance(program, str) or not program):
            raise ProtocolError(protocol.BAD_REQUEST, "'program' must be a program name")
        self._program: str | None = program
        self._done = False
        if not self.master.herald.ask(self._finish):
            self._finish({"error": "the herald is not running (see the daemon's log); "
                                   "it is started again shortly"})
            return
        self.master.loop.call_later(FLEET_WAIT, lambda: self._finish(
            {"error": f"the herald did not answer within {FLEET_WAIT:g} s"}))

    def _finish(self, answer: dict[str, Any]) -> None:
        if self._done:
            return
        self._done = True
        daemon = self.master.daemon
        available = "nodes" in answer
        nodes = list(answer.get("nodes") or [])
        if self._program is not None:
            nodes = fleet_view.only_program(nodes, self._program)
        self.reply({"node": daemon.node_name, "interval": daemon.fleet.interval,
                    "herald_pid": self.master.herald.pid, "available": available,
                    "connected": bool(answer.get("connected")), "error": answer.get("error"),
                    "since": answer.get("since"), "truncated": answer.get("truncated", 0),
                    "nodes": nodes})


class Reexec(Command):
    """Re-execute the master in place (master/reexec.py): same pid, socket and children.
    The reply comes from the new image, or says why the re-exec was refused (the old
    master runs on). `all`: then reload every running program with --preload, one at a
    time, and reply once all are steady."""

    name = "reexec"

    def run(self) -> None:
        self.master.reexec.request(self.conn, self.req_id, self.flag("all", False))


class Version(Command):
    """Versions of the daemon and of its protocol."""

    name = "version"

    def run(self) -> None:
        self.reply({"version": __version__, "protocol": protocol.VERSION})


COMMANDS: dict[str, type[Command]] = {
    cls.name: cls for cls in (Status, Start, Stop, Restart, Reload, Scale, Reread, Update,
                              Signal, Pid, Tail, Reopen, Shutdown, Fleet, Reexec, Version)
}


def dispatch(master: Supervisor, conn: Connection, request: dict[str, Any]) -> None:
    req_id = request.get("id")
    cls = COMMANDS.get(request["cmd"])
    try:
        if cls is None:
            raise ProtocolError(protocol.BAD_REQUEST,
                                f"unknown command {request['cmd']!r}; known: {', '.join(COMMANDS)}")
        if master.stopping and cls not in (Status, Pid, Version, Shutdown, Tail, Reopen, Fleet):
            raise ProtocolError(protocol.SHUTTING_DOWN, "the daemon is shutting down")
        cls(master, conn, req_id, request["args"]).run()
    except ProtocolError as exc:
        conn.send(protocol.error(req_id, exc.code, exc.message))
