"""The control commands (master/commands.py) and the status view (master/status.py), run
through `commands.dispatch` against a small fake master: real ProgramRuntimes hosted by a
World (tests/unit/fakes.py), real ProgramOutputs, and waiters kept as arbiter.Master keeps
them (`check_waiters` is the master's re-check after events)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

from qsupervisor import __version__, stats_segment
from qsupervisor.config import ConfigDiff, ConfigError, ProgramConfig
from qsupervisor.config.problems import Problem
from qsupervisor.control import protocol
from qsupervisor.ctl import render
from qsupervisor.master import commands, fleet, queue_readings
from qsupervisor.master.herald import HeraldLink
from qsupervisor.master.output import ProgramOutput
from qsupervisor.master.pool import DEGRADED_GRACE
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.reconfigure import UnknownPrograms, UpdateResult
from qsupervisor.states import ProgramState
from qsupervisor.stats_segment import DONE, RETRIED
from tests.unit.config_files import config, program
from tests.unit.fakes import World

P = ProgramState
Result = dict[str, Any]
Check = Callable[[], Optional[Result]]


class Conn:
    """A client connection: what the master sent it, and its unsubscribe callbacks."""

    def __init__(self) -> None:
        self.sent: list[Result] = []
        self.on_disconnect: list[Callable[[], None]] = []

    def send(self, message: Result) -> None:
        self.sent.append(message)


class FakeMaster:
    """commands.Supervisor over a World. reread and update give what the test put in
    `answers`: a value, an exception to raise, or a function of the names to call."""

    def __init__(self, world: World, log_dir: Path, *programs: ProgramConfig,
                 **daemon: Any) -> None:
        self.world, self.loop = world, world.loop
        self.config = config(*programs, log_dir=str(log_dir), **daemon)
        self.daemon = self.config.daemon
        self.programs = {p.name: ProgramRuntime(p, world) for p in programs}  # type: ignore[arg-type]
        self.outputs = {p.name: ProgramOutput(p.name, str(log_dir), 0, 0) for p in programs}
        self.started = world.clock.time()
        self.stopping = False
        self.waiters: list[tuple[Check, Callable[[Result], None]]] = []
        self.answers: dict[str, Any] = {}
        self.reopened = 0
        # Not started: a test that wants a herald starts it (and plays it, world.herald).
        self.herald = HeraldLink(world, lambda: fleet.summary(
            self.programs.values(), self.daemon, self.started, world.clock))

    def _answer(self, cmd: str, *args: Any) -> Any:
        answer = self.answers[cmd]
        if isinstance(answer, Exception):
            raise answer
        return answer(*args) if callable(answer) else answer

    def reread(self) -> ConfigDiff:
        return self._answer("reread")

    def update(self, names: list[str] | None) -> UpdateResult:
        return self._answer("update", names)

    def reopen(self) -> None:
        self.reopened += 1

    def shutdown(self, fast: bool) -> None:
        self.stopping = True
        for runtime in self.programs.values():
            runtime.stop("shutdown")

    def reply_later(self, conn: Any, req_id: Any, check: Check) -> None:
        self._wait_for(check, lambda result: conn.send(protocol.ok(req_id, result)))

    def _wait_for(self, check: Check, reply: Callable[[Result], None]) -> None:
        result = check()
        if result is None:
            self.waiters.append((check, reply))
        else:
            reply(result)

    def check_waiters(self) -> None:
        """What the master does once events have been handled."""
        waiting, self.waiters = self.waiters, []
        for check, reply in waiting:
            self._wait_for(check, reply)

    def settle(self) -> None:
        self.world.run()
        self.check_waiters()

    def running(self, *names: str) -> None:
        for name in names:
            self.programs[name].start()
        self.world.run()
        assert all(self.programs[n].running
                   and self.programs[n].serving() == self.programs[n].desired for n in names)

    def close(self) -> None:
        for output in self.outputs.values():
            output.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., FakeMaster]]:
    made: list[FakeMaster] = []

    def build(world: World | None = None, **daemon: Any) -> FakeMaster:
        made.append(FakeMaster(world or World(), tmp_path, program("orders", workers=2),
                               program("mail", workers=1, start_retries=1), **daemon))
        return made[-1]

    yield build
    for master in made:
        master.close()


@pytest.fixture
def master(make: Callable[..., FakeMaster]) -> FakeMaster:
    return make()


def ask(master: FakeMaster, cmd: str, **args: Any) -> Conn:
    conn = Conn()  # has what the commands use of a Connection
    commands.dispatch(master, conn, protocol.request(cmd, args, req_id=7))  # type: ignore[arg-type]
    return conn


def result(conn: Conn) -> Result:
    """The one reply sent, which must be a success."""
    assert len(conn.sent) == 1, conn.sent
    assert conn.sent[0]["ok"] is True and conn.sent[0]["id"] == 7, conn.sent[0]
    return conn.sent[0]["result"]


def refusal(conn: Conn) -> tuple[str, str]:
    assert len(conn.sent) == 1 and conn.sent[0]["ok"] is False, conn.sent
    return conn.sent[0]["error"]["code"], conn.sent[0]["error"]["message"]


def status(master: FakeMaster, **args: Any) -> Result:
    args.setdefault("queues", False)
    return result(ask(master, "status", **args))


# -- status -----------------------------------------------------------------------------

def test_status_of_stopped_programs_replies_at_once(master: FakeMaster) -> None:
    master.world.advance(12.5)
    reply = status(master, queues=True)  # no leader to ask: no wait
    assert reply["master"] == {"pid": os.getpid(), "uptime": 12.5, "version": __version__,
                               "config": "/etc/qsupervisor/queues.yaml", "herald_pid": None}
    assert list(reply["programs"]) == ["orders", "mail"]
    orders = reply["programs"]["orders"]
    assert (orders["state"], orders["queue"], orders["leader_pid"], orders["desired"],
            orders["running"], orders["workers"]) == ("STOPPED", "orders", None, 2, 0, [])
    assert orders["preload"] == {"files": 0, "stale": [], "message": None}
    assert orders["summary"] == {"states": {}, "busy": 0, "held": 0, "rss": 0}
    assert orders["queue_stats"] is None


def test_status_figures_of_a_running_program(master: FakeMaster) -> None:
    master.running("orders")
    first, second = master.world.worker(0), master.world.worker(1)
    first.start_job("msg-1")
    first.stats.set_held(2)
    for outcome in (DONE, DONE, RETRIED):
        second.stats.job_finished(outcome)
    master.world.advance(5.0)
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert (orders["state"], orders["desired"], orders["running"]) == ("RUNNING", 2, 2)
    assert orders["leader_pid"] == master.world.leader().pid and orders["leader_uptime"] == 5.0
    assert orders["summary"] == {"states": {"RUNNING": 2}, "busy": 1, "held": 2, "rss": 0}
    assert orders["last_minute"] == {"done": 3, "failed": 1, "retried": 1}
    w0, w1 = orders["workers"]
    assert (w0["slot"], w0["pid"], w0["state"], w0["uptime"]) == (0, first.pid, "RUNNING", 5.0)
    assert w0["job"]["id"] == "msg-1" and 4.0 < w0["job"]["running_for"] <= 5.0
    assert (w0["held"], w0["jobs"], w0["superseded"], w0["draining"]) == (2, 0, False, False)
    assert (w0["restarts"], w0["last_exit"]) == (0, None)
    assert (w1["pid"], w1["job"], w1["jobs"], w1["failed"], w1["retried"]) == (
        second.pid, None, 3, 1, 1)
    brief = status(master, names=["orders"], workers=False)["programs"]["orders"]
    assert brief["workers"] == [] and brief["summary"]["busy"] == 1


def test_status_shows_each_workers_node_and_how_many_consume(master: FakeMaster) -> None:
    master.running("orders")
    master.world.worker(1).send(ev="broker_lost", error="ConnectionClosedByBroker(320)")
    master.world.run()
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert (orders["state"], orders["running"], orders["consuming"]) == ("RUNNING", 2, 1)
    w0, w1 = orders["workers"]
    assert (w0["node"], w0["consuming"]) == ("amqp://guest@rabbit-1:5672/%2F", True)
    assert (w1["node"], w1["consuming"], w1["state"]) == (None, False, "RUNNING")
    master.world.worker(1).send(ev="broker_back", node="amqp://guest@rabbit-3:5672/%2F")
    master.world.run()
    w1 = status(master, names=["orders"])["programs"]["orders"]["workers"][1]
    assert (w1["node"], w1["consuming"], w1["broker_error"]) == (
        "amqp://guest@rabbit-3:5672/%2F", True, None)


def test_status_shows_the_qsupervisor_a_leader_or_worker_runs_when_not_the_masters(
        master: FakeMaster) -> None:
    # As after the master re-executed a newer qsupervisor: the leader and the workers it
    # forked still run the one they started with, until reload --preload.
    master.world.version = "0.0.9"
    master.running("orders")
    reply = status(master, names=["orders"])
    orders = reply["programs"]["orders"]
    assert orders["leader_version"] == "0.0.9"
    assert [w["version"] for w in orders["workers"]] == ["0.0.9", "0.0.9"]
    text = render.render("status", reply)
    assert f"leader runs qsupervisor 0.0.9 (the master {__version__})" in text
    assert sum("qsupervisor 0.0.9" in line for line in text.splitlines()
               if line.strip().startswith("worker")) == 2
    # The same version: nothing said.
    master.world.version = __version__
    master.programs["mail"].start()
    master.world.run()
    mail = render.render("status", status(master, names=["mail"]))
    assert "runs qsupervisor" not in mail and "qsupervisor 0" not in mail.split("\n", 1)[1]


def test_a_program_short_of_consumers_past_the_grace_is_degraded(master: FakeMaster) -> None:
    master.running("orders")
    master.world.worker(0).send(ev="broker_lost", error="connection reset")
    master.world.run()
    master.world.advance(DEGRADED_GRACE - 1)
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert (orders["state"], orders["degraded"]) == ("RUNNING", None)  # a blip: not yet
    master.world.advance(2)
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert orders["state"] == "DEGRADED"
    assert orders["degraded"] == f"1 of 2 workers consuming for {DEGRADED_GRACE + 1:.0f}s"
    assert render.not_running(status(master, names=["orders"]), ["orders"])
    master.world.worker(0).send(ev="broker_back", node="amqp://guest@rabbit-2:5672/%2F")
    master.world.run()
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert (orders["state"], orders["degraded"], orders["consuming"]) == ("RUNNING", None, 2)
    assert not render.not_running(status(master, names=["orders"]), ["orders"])


def test_crash_backoff_leaving_a_slot_empty_degrades_the_program(master: FakeMaster) -> None:
    master.running("orders")
    for delay in (1, 2, 4, 8):  # each crash restarts after its backoff, within the grace
        master.world.worker(1).exit(sig=signal.SIGKILL)
        master.world.run()
        assert master.programs["orders"].consuming() == 1
        master.world.advance(delay + 0.1)
        assert status(master, names=["orders"])["programs"]["orders"]["state"] == "RUNNING"
    master.world.worker(1).exit(sig=signal.SIGKILL)  # now 16 s of backoff
    master.world.run()
    master.world.advance(DEGRADED_GRACE + 0.1)
    assert status(master, names=["orders"])["programs"]["orders"]["state"] == "DEGRADED"


def test_a_stopped_program_is_never_degraded(master: FakeMaster) -> None:
    master.running("orders")
    master.world.worker(0).send(ev="broker_lost", error="connection reset")
    master.world.run()
    master.world.advance(DEGRADED_GRACE + 1)
    master.programs["orders"].stop()
    master.world.run()
    master.programs["orders"].start()
    master.world.run()
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert (orders["state"], orders["degraded"], orders["consuming"]) == ("RUNNING", None, 2)


def test_last_minute_counts_recently_exited_workers_and_the_slot_keeps_restarts(
        master: FakeMaster) -> None:
    master.running("mail")
    master.world.worker(0).stats.job_finished(DONE)
    master.world.worker(0).stats.job_finished(DONE)
    master.world.worker(0).exit(0, reason="max_jobs")
    master.world.run()
    mail = status(master, names=["mail"])["programs"]["mail"]
    assert mail["last_minute"] == {"done": 2, "failed": 0, "retried": 0}
    [worker] = mail["workers"]
    assert worker["pid"] == master.world.worker(0).pid and worker["jobs"] == 0
    assert (worker["restarts"], worker["last_exit"]) == (1, "recycled: max_jobs")
    master.world.advance(61.0)
    assert status(master, names=["mail"])["programs"]["mail"]["last_minute"]["done"] == 0


def test_a_recycled_workers_jobs_leave_the_last_minute_on_time(
        master: FakeMaster, monkeypatch: pytest.MonkeyPatch) -> None:
    # The segment's per-second buckets follow the manual clock, as the daemon's follow time.
    monkeypatch.setattr(stats_segment, "time", SimpleNamespace(time=master.world.clock.time))
    master.running("mail")
    master.world.worker(0).stats.job_finished(DONE)
    master.world.advance(50.0)
    master.world.worker(0).exit(0, reason="max_jobs")
    master.world.run()
    assert status(master, names=["mail"])["programs"]["mail"]["last_minute"]["done"] == 1
    master.world.advance(20.0)  # the job was done 70 s ago
    assert status(master, names=["mail"])["programs"]["mail"]["last_minute"]["done"] == 0


def test_status_waits_for_the_leaders_queue_stats(master: FakeMaster) -> None:
    master.running("orders", "mail")
    master.world.queue_stats = {"ready": 5, "consumers": 3, "dead_letter_ready": 1}
    orders_worker = next(w for w in master.world.workers() if w.leader.program.name == "orders")
    orders_worker.stats.set_held(1)
    conn = ask(master, "status")
    assert conn.sent == []
    master.world.run()
    programs = result(conn)["programs"]
    for name, held in (("orders", 1), ("mail", 0)):
        assert programs[name]["queue_stats"] == {"ready": 5, "consumers": 3,
                                                 "unacked": held, "dead_letter_ready": 1}
    master.world.advance(1.0)  # the timeout fires too: no second reply
    assert len(conn.sent) == 1


def test_status_with_a_silent_leader_replies_after_the_wait(master: FakeMaster) -> None:
    master.running("orders")
    conn = ask(master, "status", names=["orders"])
    master.world.run()
    master.world.advance(commands.QUEUE_STATS_WAIT - 0.01)
    assert conn.sent == []
    master.world.advance(0.01)
    assert result(conn)["programs"]["orders"]["queue_stats"] is None
    # The unanswered request is given up after a while; the next status asks again.
    master.world.advance(queue_readings.EXPIRY)
    master.world.queue_stats = {"error": "connection refused"}  # the leader's broker failed
    conn = ask(master, "status", names=["orders"])
    master.world.run()
    assert result(conn)["programs"]["orders"]["queue_stats"] == {"error": "connection refused"}
    assert [r["op"] for r in master.world.leader().requests] == ["queue_stats", "queue_stats"]


def test_a_burst_of_status_requests_shares_one_question_to_the_leader(
        master: FakeMaster) -> None:
    """400 pipelined status requests used to send the leader 400 queue_stats, filling its
    channel; the master then sat in a blocking send per request and stopped supervising."""
    master.running("orders")
    leader = master.world.leader()
    conns = [ask(master, "status", names=["orders"]) for _ in range(1000)]
    master.world.run()
    assert [r["op"] for r in leader.requests] == ["queue_stats"]
    master.world.advance(commands.QUEUE_STATS_WAIT)
    assert all(len(conn.sent) == 1 and conn.sent[0]["ok"] for conn in conns)
    leader.send(ev="queue_stats", rid=leader.requests[0]["rid"], ready=3, consumers=1,
                dead_letter_ready=0)
    master.world.run()  # the late answer finds nobody waiting, and nothing breaks
    conn = ask(master, "status", names=["orders"])
    master.world.advance(commands.QUEUE_STATS_WAIT)
    assert result(conn)["programs"]["orders"]["queue_stats"] is None  # asked again: silent
    assert len(leader.requests) == 2


def test_status_during_a_rolling_reload_flags_superseded_and_draining(
        master: FakeMaster) -> None:
    master.running("orders")
    old = master.world.workers()
    master.world.auto_ready, master.world.obedient = False, False
    reload = ask(master, "reload", names=["orders"])
    master.settle()
    rows = status(master, names=["orders"])["programs"]["orders"]["workers"]
    assert [(r["slot"], r["state"], r["superseded"], r["draining"]) for r in rows] == [
        (0, "STARTING", False, False), (1, "STARTING", False, False),
        (0, "RUNNING", True, False), (1, "RUNNING", True, False)]
    new = [w for w in master.world.workers() if w not in old]
    new[0].ready()
    master.settle()
    orders = status(master, names=["orders"])["programs"]["orders"]
    assert orders["running"] == 2 and reload.sent == []
    assert [(r["pid"], r["state"], r["superseded"], r["draining"], r["restarts"])
            for r in orders["workers"]] == [
        (new[0].pid, "RUNNING", False, False, 0), (new[1].pid, "STARTING", False, False, 0),
        (old[1].pid, "RUNNING", True, False, 0), (old[0].pid, "STOPPING", False, True, 0)]
    master.world.obedient = True
    old[0].exit(0, reason="stopped")
    new[1].ready()
    master.settle()
    assert old[1].exited
    assert result(reload) == {"programs": {"orders": {"ok": True, "state": "RUNNING",
                                                      "problems": []}}}


def test_preload_goes_stale_when_a_preloaded_file_changes(
        make: Callable[..., FakeMaster], tmp_path: Path) -> None:
    module = tmp_path / "app" / "jobs.py"
    module.parent.mkdir()
    module.write_text("x = 1\n")
    master = make(World(auto_ready=False), path=(str(tmp_path),))
    master.programs["mail"].start()
    master.world.run()
    mtime = os.stat(module).st_mtime
    master.world.leader().ready(files=((str(module), mtime),))
    master.world.run()
    assert status(master)["programs"]["mail"]["preload"] == {"files": 1, "stale": [],
                                                             "message": None}
    os.utime(module, (mtime + 10, mtime + 10))
    assert status(master)["programs"]["mail"]["preload"] == {
        "files": 1, "stale": [str(module)],
        "message": "preload stale: app/jobs.py changed; run reload mail --preload"}
    module.unlink()  # gone is stale too
    assert status(master)["programs"]["mail"]["preload"]["stale"] == [str(module)]


# -- commands that change things --------------------------------------------------------

def test_start_replies_once_settled_with_each_programs_outcome(master: FakeMaster) -> None:
    conn = ask(master, "start", names=["orders", "mail"])
    assert conn.sent == [] and master.programs["orders"].state is P.STARTING
    next(x for x in master.world.leaders if x.program.name == "mail").fail_spawns = "EAGAIN"
    master.settle()
    assert result(conn) == {"programs": {
        "orders": {"ok": True, "state": "RUNNING", "problems": []},
        "mail": {"ok": False, "state": "RUNNING",
                 "problems": ["worker 0: crashed: fork failed: EAGAIN"]}}}


@pytest.mark.parametrize("cmd,args,state,workers", [
    ("stop", {}, P.STOPPED, 0),
    ("restart", {}, P.RUNNING, 2),
    ("reload", {"preload": True}, P.RUNNING, 2),
    ("scale", {"workers": 1}, P.RUNNING, 1),
])
def test_changes_reply_once_settled(master: FakeMaster, cmd: str, args: Result,
                                    state: ProgramState, workers: int) -> None:
    master.running("orders")
    leader = master.world.leader()
    conn = ask(master, cmd, names=["orders"], **args)
    assert conn.sent == []
    master.settle()
    assert result(conn) == {"programs": {"orders": {"ok": True, "state": state.value,
                                                    "problems": []}}}
    assert len(master.world.workers()) == workers
    assert leader.exited is (cmd != "scale")  # restart and reload --preload: a new leader


@pytest.mark.parametrize("cmd,args", [("start", {}), ("stop", {}), ("restart", {}),
                                      ("reload", {}), ("scale", {"workers": 0})])
def test_wait_false_replies_at_once_as_pending(master: FakeMaster, cmd: str,
                                               args: Result) -> None:
    if cmd != "start":
        master.running("orders")
    conn = ask(master, cmd, names=["all"], wait=False, **args)
    pending = {"ok": True, "state": "pending"}
    assert result(conn) == {"programs": {"orders": pending, "mail": pending}}
    master.settle()
    assert len(conn.sent) == 1


NAMES, WORKERS = "'names' must be a list of program names", "'workers' must be an integer from 0"
LINES = "'lines' must be an integer >= 0"


@pytest.mark.parametrize("cmd,args,code,message", [
    ("start", {"names": ["nope", "mail"]}, protocol.NOT_FOUND,
     "no such program: nope (programs: orders, mail)"),
    ("stop", {"names": "orders"}, protocol.BAD_REQUEST, NAMES),
    ("start", {}, protocol.BAD_REQUEST, "name at least one program, or 'all'"),
    ("scale", {"names": ["orders"], "workers": 4097}, protocol.BAD_REQUEST, WORKERS + " to 4096"),
    ("scale", {"names": ["orders"], "workers": -1}, protocol.BAD_REQUEST, WORKERS),
    ("scale", {"names": ["orders"], "workers": True}, protocol.BAD_REQUEST, WORKERS),
    ("signal", {"names": ["orders"], "signal": "SIGFOO"}, protocol.BAD_REQUEST,
     "unknown signal 'SIGFOO'"),
    ("signal", {"names": ["orders"], "signal": "0"}, protocol.BAD_REQUEST, "unknown signal '0'"),
    ("tail", {"names": ["orders", "mail"]}, protocol.BAD_REQUEST, "tail takes exactly one program"),
    ("tail", {"names": ["orders"], "lines": -1}, protocol.BAD_REQUEST, LINES),
    ("tail", {"names": ["orders"], "lines": True}, protocol.BAD_REQUEST, LINES),
    ("status", {"workers": "no"}, protocol.BAD_REQUEST, "'workers' must be true or false"),
    ("reload", {"names": ["orders"], "preload": 1}, protocol.BAD_REQUEST,
     "'preload' must be true or false"),
    ("update", {"names": "orders"}, protocol.BAD_REQUEST, NAMES),
    ("pid", {"names": ["nope"]}, protocol.NOT_FOUND, "no such program: nope"),
    ("frobnicate", {}, protocol.BAD_REQUEST,
     f"unknown command 'frobnicate'; known: {', '.join(commands.COMMANDS)}"),
    ("frobnicate", {}, protocol.BAD_REQUEST, "unknown command 'frobnicate'; known: status, start"),
])
def test_bad_arguments_are_refused_and_change_nothing(master: FakeMaster, cmd: str, args: Result,
                                                      code: str, message: str) -> None:
    got_code, got_message = refusal(ask(master, cmd, **args))
    assert got_code == code and got_message.startswith(message)
    assert master.world.leaders == [] and master.waiters == []


def test_a_refused_wait_flag_changes_nothing(master: FakeMaster) -> None:
    master.running("orders")
    assert refusal(ask(master, "stop", names=["orders"], wait="no"))[0] == protocol.BAD_REQUEST
    assert master.programs["orders"].state is P.RUNNING


def test_a_program_removed_while_a_command_waits(master: FakeMaster) -> None:
    master.running("orders")
    stop = ask(master, "stop", names=["orders"])
    status_reply = ask(master, "status", names=["orders"])  # its leader stays silent
    del master.programs["orders"]  # as arbiter.Master.remove_program does
    master.settle()
    assert result(stop) == {"programs": {"orders": {"ok": True, "state": "REMOVED",
                                                    "problems": []}}}
    master.world.advance(commands.QUEUE_STATS_WAIT)
    assert result(status_reply)["programs"] == {}


# -- the other commands -------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["hup", "SIGHUP", "1", 1])
def test_signal_reaches_every_worker(master: FakeMaster, spelling: Any) -> None:
    master.running("orders", "mail")
    pids = [w.pid for w in master.world.workers() if w.leader.program.name == "orders"]
    reply = result(ask(master, "signal", names=["orders"], signal=spelling))
    assert reply == {"signal": "SIGHUP", "pids": {"orders": pids}} and len(pids) == 2
    assert master.world.processes.signals == [(pid, signal.SIGHUP) for pid in pids]


def test_pid_and_version(master: FakeMaster) -> None:
    assert result(ask(master, "version")) == {"version": __version__, "protocol": 1}
    assert result(ask(master, "pid")) == {"master": os.getpid(), "programs": {}}
    master.running("orders")
    world = master.world
    assert result(ask(master, "pid", names=["all"])) == {"master": os.getpid(), "programs": {
        "orders": {"leader": world.leader().pid, "workers": [w.pid for w in world.workers()]},
        "mail": {"leader": None, "workers": []}}}


def test_tail_shows_the_last_lines_then_follows(master: FakeMaster) -> None:
    output = master.outputs["orders"]
    os.write(output.write_fd, b"one\ntwo\nthree\n")
    output.on_readable()
    assert result(ask(master, "tail", names=["orders"], lines=2)) == {
        "path": output.path, "data": "two\nthree\n"}
    conn = ask(master, "tail", names=["orders"], lines=1, follow=True)
    os.write(output.write_fd, b"four\n")
    output.on_readable()
    assert conn.sent == [protocol.stream(7, {"data": "three\n"}),
                         protocol.stream(7, {"data": "four\n"})]
    for unsubscribe in conn.on_disconnect:
        unsubscribe()
    assert output.followers == []


def test_reread_shows_the_changes_or_the_config_error(master: FakeMaster) -> None:
    master.answers["reread"] = ConfigDiff(added=("billing",), scaled=("orders",),
                                      details=(("orders", "2 -> 1"),))
    assert result(ask(master, "reread")) == {
        "changes": ["billing: added", "orders: scaled 2 -> 1"], "added": ["billing"],
        "removed": [], "changed": [], "scaled": ["orders"]}
    master.answers["reread"] = ConfigError([Problem("queues.yaml", 3, "programs.x", "bad")])
    assert refusal(ask(master, "reread")) == (protocol.CONFIG_ERROR,
                                              "queues.yaml:3: programs.x: bad")


def test_update_replies_once_the_touched_programs_settle(master: FakeMaster) -> None:
    master.running("orders")
    asked: list[list[str] | None] = []

    def update(names: list[str] | None) -> UpdateResult:
        asked.append(names)
        master.programs["orders"].scale(1)
        return UpdateResult(ConfigDiff(scaled=("orders",)), ("orders",), ("orders: scaled",))

    master.answers["update"] = update
    conn = ask(master, "update", names=["orders"])
    assert conn.sent == [] and asked == [["orders"]]
    master.settle()
    assert result(conn) == {"changes": ["orders: scaled"], "warnings": [], "programs": {
        "orders": {"ok": True, "state": "RUNNING", "problems": []}}}
    master.answers["update"] = update
    assert result(ask(master, "update", wait=False)) == {
        "changes": ["orders: scaled"], "warnings": [], "programs": {}}
    assert asked[-1] is None  # no names: the whole file
    master.answers["update"] = ConfigError([Problem("queues.yaml", 9, "", "bad")])
    assert refusal(ask(master, "update")) == (protocol.CONFIG_ERROR, "queues.yaml:9: bad")
    master.answers["update"] = UnknownPrograms("no such program in the running or the new "
                                               "configuration: x")
    assert refusal(ask(master, "update", names=["x"]))[0] == protocol.NOT_FOUND


def test_while_shutting_down_only_the_harmless_commands_run(master: FakeMaster) -> None:
    master.running("orders")
    conn = ask(master, "shutdown")
    assert conn.sent == [] and master.stopping
    master.settle()
    assert result(conn) == {"stopped": True} and master.world.live_leaders() == []
    for cmd in ("start", "stop", "restart", "reload", "scale", "signal", "reread", "update"):
        assert refusal(ask(master, cmd, names=["orders"])) == (
            protocol.SHUTTING_DOWN, "the daemon is shutting down")
    assert status(master)["programs"]["orders"]["state"] == "STOPPED"
    assert result(ask(master, "version"))["protocol"] == 1
    assert result(ask(master, "reopen")) == {} and master.reopened == 1
    assert result(ask(master, "shutdown", wait=False)) == {"stopped": False}
