"""The master (master/arbiter.py) for real, on fake leaders (tests/unit/fakes.py): a real
Master with its control socket and output files in tmp_path, a configuration file it
re-reads, the World's fake processes and manual clock. master.run() is never called (it
installs process-wide signal handlers); the tests call what its loop would call."""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from qsupervisor.config import ConfigError, load_config
from qsupervisor.control import protocol
from qsupervisor.master import handover
from qsupervisor.master.arbiter import Master
from qsupervisor.master.control_server import ControlServer, PeerPolicy
from qsupervisor.master.pool import backoff
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.reconfigure import UnknownPrograms
from qsupervisor.master.reexec import BLOCKED
from qsupervisor.states import ProgramState
from tests.unit.config_files import write
from tests.unit.fakes import FakeLeader, FakeWorker, World, signal_status

P = ProgramState
Programs = dict[str, dict[str, Any]]
BOTH: Programs = {"orders": {"workers": 2}, "emails": {"workers": 1}}


class Daemon:
    """A Master running `programs` on fake leaders, and its configuration file."""

    def __init__(self, tmp_path: Path, programs: Programs, **daemon: Any) -> None:
        self.dir = tmp_path
        self.path = self.write(programs, **daemon)
        config = load_config(self.path)
        settings = config.daemon
        self.server = ControlServer(settings.socket, settings.socket_mode,
                                    PeerPolicy.from_names(settings.allow_users,
                                                          settings.allow_groups))
        self.reopened = 0
        self.world = World()
        self.master = Master(config, "json", self.server, self._reopen,
                             self.world.processes, self.world.clock)
        self.world.attach(self.master)
        for program in config.programs.values():
            self.master.add_program(program.name, autostart=program.autostart)
        self.world.run()

    def _reopen(self) -> None:
        self.reopened += 1

    def write(self, programs: Programs, **daemon: Any) -> str:
        """(Re)write the file: these programs, the daemon's files all in tmp_path."""
        section = {"socket": f"{self.dir}/ctl.sock", "pidfile": f"{self.dir}/q.pid",
                   "logfile": f"{self.dir}/q.log", "log_dir": str(self.dir), **daemon}
        body = {"qsupervisord": section,
                "programs": {name: {"handler": "app.jobs:handle", **settings}
                             for name, settings in programs.items()}}
        return write(self.dir / "queues.yaml", yaml.safe_dump(body, sort_keys=False))

    def program(self, name: str) -> ProgramRuntime:
        return self.master.programs[name]

    def leader_of(self, name: str) -> FakeLeader:
        live = [x for x in self.world.live_leaders() if x.program.name == name]
        assert len(live) == 1, f"{len(live)} live leaders for {name}"
        return live[0]

    def workers_of(self, name: str) -> list[FakeWorker]:
        return [w for w in self.world.workers() if w.leader.program.name == name]

    def close(self) -> None:
        """Close what the fakes and the master still hold open."""
        for conn in list(self.server.connections.values()):
            conn.close()
        self.server.sock.close()
        for output in self.master.outputs.values():
            output.close()
        socks = [x.sock for x in self.world.leaders]
        socks += [w.channel for x in self.world.leaders for w in x.spawned]
        for p in self.master.programs.values():
            socks += [x.sock for x in (p.leader, p.pending_leader, *p.old_leaders) if x]
            socks += [w.channel for w in p.workers() if w.channel is not None]
        for sock in socks:
            sock.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Daemon] = []

    def factory(programs: Programs = BOTH, **daemon: Any) -> Daemon:
        made.append(Daemon(tmp_path, programs, **daemon))
        return made[-1]

    yield factory
    for daemon in made:
        daemon.close()
    structlog.reset_defaults()  # an update of log_level changes it process-wide


def test_update_adds_a_program_and_starts_it(make: Any) -> None:
    d = make({"orders": {"workers": 2}})
    first = d.leader_of("orders")
    assert d.program("orders").state is P.RUNNING and d.program("orders").serving() == 2
    assert d.master.pids[first.pid] is d.program("orders")
    d.write(BOTH)
    result = d.master.update(None)
    d.world.run()
    assert result.touched == ("emails",) and result.changes == ("emails: added",)
    assert d.program("emails").state is P.RUNNING and d.program("emails").serving() == 1
    assert list(d.master.config.programs) == ["orders", "emails"]
    assert d.master.outputs["emails"].path == str(d.dir / "emails.log")
    assert d.leader_of("orders") is first and (d.dir / "emails.log").exists()


def test_update_retires_a_removed_program_and_forgets_it_once_stopped(make: Any) -> None:
    d = make()
    emails = d.program("emails")
    worker = d.workers_of("emails")[0]
    d.world.obedient = False
    d.write({"orders": {"workers": 2}})
    assert d.master.update(None).changes == ("emails: removed",)
    d.world.run()
    assert emails.state is P.STOPPING and d.master.programs["emails"] is emails
    assert (worker.pid, signal.SIGTERM) in d.world.processes.signals
    assert len(d.master.waiters) == 1
    d.world.obedient = True
    worker.exit(0, reason="stopped")
    d.world.run()
    assert emails.state is P.STOPPED and d.world.live_leaders() == [d.leader_of("orders")]
    assert "emails" not in d.master.programs and "emails" not in d.master.outputs
    assert d.master.waiters == [] and d.program("orders").serving() == 2


def test_update_rolls_a_changed_program_onto_a_new_leader(make: Any) -> None:
    d = make()
    old_leader, old = d.leader_of("orders"), d.workers_of("orders")
    emails_leader = d.leader_of("emails")
    d.write({"orders": {"workers": 2, "max_jobs": 100}, "emails": {"workers": 1}})
    result = d.master.update(None)
    d.world.run()
    assert result.changes == ("orders: changed (max_jobs 0 -> 100)",)
    orders = d.program("orders")
    assert orders.config.max_jobs == 100 and orders.serving() == 2
    assert orders.pending_leader is None and orders.old_leaders == []
    assert old_leader.exited and all(w.exited for w in old)
    new_leader = d.leader_of("orders")
    assert orders.leader is not None and orders.leader.pid == new_leader.pid
    assert [w.leader for w in d.workers_of("orders")] == [new_leader, new_leader]
    assert d.leader_of("emails") is emails_leader


def test_update_of_workers_only_scales_on_the_same_leader(make: Any) -> None:
    d = make()
    leader = d.leader_of("orders")
    d.write({"orders": {"workers": 3}, "emails": {"workers": 1}})
    result = d.master.update(None)
    d.world.run()
    assert result.changes == ("orders: scaled 2 -> 3",)
    assert d.program("orders").serving() == 3 and d.program("orders").config.workers == 3
    assert d.leader_of("orders") is leader and len(d.world.leaders) == 2


def test_a_broken_file_changes_nothing_and_hup_survives_it(make: Any) -> None:
    d = make()
    config, programs = d.master.config, dict(d.master.programs)
    write(Path(d.path), "programs:\n  orders:\n    workers: 3\n")  # no handler
    with pytest.raises(ConfigError):
        d.master.update(None)
    with pytest.raises(ConfigError):
        d.master.reread()
    d.world.run()
    assert d.master.config is config and d.master.programs == programs
    assert len(d.world.leaders) == 2 and d.world.processes.signals == []
    d.master.handle_hup()  # the signal's way: logged, and the daemon runs on
    assert d.master.config is config
    d.write({"orders": {"workers": 2}, "emails": {"workers": 1}, "reports": {}})
    d.master._on_signal(signal.SIGHUP)  # a good file again: applied
    d.world.run()
    assert d.program("reports").state is P.RUNNING


def test_update_of_named_programs_leaves_the_others_alone(make: Any) -> None:
    d = make()
    orders_leader = d.leader_of("orders")
    d.write({"orders": {"workers": 2, "max_jobs": 100}, "emails": {"workers": 3}})
    with pytest.raises(UnknownPrograms, match="nosuch"):
        d.master.update(["emails", "nosuch"])
    assert d.program("emails").serving() == 1  # nothing applied
    result = d.master.update(["emails"])
    d.world.run()
    assert result.touched == ("emails",) and result.changes == ("emails: scaled 1 -> 3",)
    assert d.program("emails").serving() == 3
    assert d.master.config.programs["orders"].max_jobs == 0
    assert d.leader_of("orders") is orders_leader
    assert d.master.reread().changed == ("orders",)  # still waiting for a full update


def test_reread_shows_the_diff_and_applies_nothing(make: Any) -> None:
    d = make()
    config = d.master.config
    d.write({"orders": {"workers": 3}, "reports": {}}, log_level="debug")
    diff = d.master.reread()
    assert (diff.added, diff.removed, diff.changed, diff.scaled, diff.daemon_changed) == (
        ("reports",), ("emails",), ("orders",), (), ("log_level",))
    assert d.master.config is config and list(d.master.programs) == ["orders", "emails"]
    assert len(d.world.leaders) == 2


def test_daemon_settings_change_in_place_or_are_warned_about(make: Any) -> None:
    d = make({"orders": {"workers": 1}})
    assert os.stat(d.server.path).st_mode & 0o777 == 0o600
    old_leader = d.leader_of("orders")
    (d.dir / "logs2").mkdir()
    d.write(BOTH, log_level="debug", socket_mode="0660", allow_users=["daemon"],
            allow_groups=["adm"], log_dir=str(d.dir / "logs2"), socket=f"{d.dir}/new.sock")
    result = d.master.update(None)
    d.world.run()
    assert result.warnings == (
        "socket: takes effect when qsupervisord restarts",
        "log_dir: applies to programs added from now on; running programs keep their "
        "output files until qsupervisord restarts")
    assert d.master.outputs["orders"].path == str(d.dir / "orders.log")
    assert d.master.outputs["emails"].path == str(d.dir / "logs2" / "emails.log")
    assert not (d.dir / "new.sock").exists()
    assert os.stat(d.server.path).st_mode & 0o777 == 0o660
    assert d.server.policy == PeerPolicy(
        frozenset({0, os.getuid(), pwd.getpwnam("daemon").pw_uid}),
        frozenset({grp.getgrnam("adm").gr_gid}))
    debug = structlog.make_filtering_bound_logger(logging.DEBUG)
    assert structlog.get_config()["wrapper_class"] is debug
    assert d.master.daemon.log_level == "debug"
    # Leaders are forked with the log level: the program rolls onto a new one.
    assert result.touched == ("emails", "orders") and old_leader.exited
    assert d.program("orders").serving() == 2 and d.program("emails").serving() == 1


def test_graceful_shutdown_stops_every_program(make: Any) -> None:
    d = make()
    pids = [w.pid for w in d.world.workers()]
    d.master._on_signal(signal.SIGTERM)
    assert d.master.stopping and not d.master._all_stopped()
    d.world.run()
    assert d.master._all_stopped() and d.world.live_leaders() == []
    assert [p.state for p in d.master.programs.values()] == [P.STOPPED, P.STOPPED]
    assert sorted(pid for pid, sig in d.world.processes.signals) == sorted(pids)
    assert {sig for _, sig in d.world.processes.signals} == {signal.SIGTERM}


def test_fast_shutdown_kills_workers_and_leaders_then_finishes(make: Any) -> None:
    d = make()
    d.server.start(d.master.loop, lambda conn, req: None)
    d.world.obedient = False  # SIGTERM ignored: only the kills end them
    leaders = [x.pid for x in d.world.leaders]
    workers = [w.pid for w in d.world.workers()]
    d.master.shutdown(fast=False)
    d.world.run()
    assert not d.master._all_stopped()
    d.world.obedient = True
    d.master._on_signal(signal.SIGQUIT)
    d.world.run()
    killed = [pid for pid, sig in d.world.processes.signals if sig == signal.SIGKILL]
    assert sorted(killed) == sorted(workers + leaders)
    assert d.master._all_stopped() and d.world.live_leaders() == []
    d.master._finish()
    assert not os.path.exists(d.server.path)
    with pytest.raises(OSError):
        os.fstat(d.master.outputs["orders"].read_fd)


def test_chld_routes_a_leader_exit_to_its_program_and_ignores_strangers(make: Any) -> None:
    d = make()
    leader, orphans = d.leader_of("orders"), [w.pid for w in d.workers_of("orders")]
    leader.exit(signal_status(signal.SIGKILL))  # World reaps it through handle_chld()
    orders = d.program("orders")
    assert orders.state is P.STARTING and orders.leader is None
    assert leader.pid not in d.master.pids and d.program("emails").state is P.RUNNING
    # Its workers, orphaned, are the master's to reap (it is their subreaper).
    d.world.processes.exits += [(pid, signal_status(signal.SIGTERM)) for pid in orphans]
    d.world.processes.exits += [(4242, 0)]  # a stranger: ignored
    d.master.handle_chld()
    assert d.world.processes.exits == [] and orders.live_workers() == []
    assert not set(orphans + [4242]) & set(d.master.pids)
    d.world.advance(backoff(1))
    assert orders.state is P.RUNNING and orders.serving() == 2


def test_waiters_reply_at_once_or_once_their_check_passes(make: Any) -> None:
    d = make()
    replies: list[dict[str, Any]] = []
    d.master.wait_for(lambda: {"now": True}, replies.append)
    assert replies == [{"now": True}] and d.master.waiters == []
    done: dict[str, Any] = {}
    d.server.start(d.master.loop, lambda conn, req: d.master.reply_later(
        conn, req["id"], lambda: dict(done) or None))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(d.server.path)
        client.sendall(protocol.encode(protocol.request("wait", req_id=7)))
        d.master.changed()
        d.world.run()
        assert len(d.master.waiters) == 1
        done["later"] = 1
        d.program("orders").scale(1)  # a change of state: the master re-checks waiters
        d.world.run()
        client.settimeout(1.0)
        assert json.loads(client.recv(4096)) == protocol.ok(7, {"later": 1})
    assert d.master.waiters == [] and replies == [{"now": True}]


def test_usr1_reopens_the_daemon_log_and_every_output_file(make: Any) -> None:
    d = make()
    path = d.dir / "orders.log"
    path.rename(d.dir / "orders.log.old")  # as logrotate does
    d.master._on_signal(signal.SIGUSR1)
    assert d.reopened == 1 and path.exists()
    os.write(d.master.outputs["orders"].write_fd, b"after\n")
    d.world.run()
    assert path.read_bytes() == b"after\n"
    assert (d.dir / "orders.log.old").read_bytes() == b""


def test_remove_program_keeps_its_last_output_and_closes_it(make: Any) -> None:
    d = make()
    d.program("emails").stop()
    d.world.run()
    assert d.program("emails").state is P.STOPPED
    output = d.master.outputs["emails"]
    os.write(output.write_fd, b"last words\n")
    d.master.remove_program("emails")  # no loop round between: remove reads it
    assert (d.dir / "emails.log").read_bytes() == b"last words\n"
    assert "emails" not in d.master.programs and "emails" not in d.master.outputs
    with pytest.raises(OSError):
        os.fstat(output.read_fd)
    d.master.remove_program("nosuch")
    assert list(d.master.programs) == ["orders"]


def test_output_reaches_followers_rotates_by_size_and_tails(make: Any) -> None:
    d = make({"orders": {"workers": 1}}, log_max_size=10, log_backups=2)
    output = d.master.outputs["orders"]
    seen: list[bytes] = []
    output.followers.append(seen.append)
    for text in (b"one 567890\n", b"two 567890\n", b"three\n", b"four 67890\n"):
        os.write(output.write_fd, text)
        d.world.run()
    assert seen == [b"one 567890\n", b"two 567890\n", b"three\n", b"four 67890\n"]
    assert (d.dir / "orders.log").read_bytes() == b""
    assert (d.dir / "orders.log.1").read_bytes() == b"three\nfour 67890\n"
    assert (d.dir / "orders.log.2").read_bytes() == b"two 567890\n"
    assert not (d.dir / "orders.log.3").exists()
    os.write(output.write_fd, b"a\nb\n")
    d.world.run()
    assert output.tail(1) == b"b\n" and output.tail(5) == b"a\nb\n" and output.tail(0) == b""


def test_tail_of_a_file_ending_mid_line(make: Any) -> None:
    d = make({"orders": {"workers": 1}})
    output = d.master.outputs["orders"]
    os.write(output.write_fd, b"a\nb\nc")
    d.world.run()
    assert output.tail(2) == b"b\nc"


def test_hup_during_shutdown_starts_nothing(make: Any) -> None:
    d = make({"orders": {"workers": 1}})
    d.world.obedient = False
    d.master.shutdown(fast=False)
    d.write(BOTH)
    d.master.handle_hup()
    d.world.obedient = True
    for worker in d.world.workers():
        worker.exit(0, reason="stopped")
    d.world.run()
    assert "emails" not in d.master.programs or d.program("emails").state is P.STOPPED
    assert d.master._all_stopped()


def test_update_to_a_new_log_dir_with_an_added_program(make: Any) -> None:
    d = make({"orders": {"workers": 1}})
    d.write(BOTH, log_dir=str(d.dir / "new-logs"))
    d.master.update(None)
    d.world.run()
    assert d.program("emails").state is P.RUNNING
    assert (d.dir / "new-logs" / "emails.log").exists()


def test_an_update_whose_new_log_dir_cannot_be_made_changes_nothing(make: Any) -> None:
    d = make({"orders": {"workers": 1}})
    (d.dir / "a-file").write_text("")
    d.write(BOTH, log_dir=str(d.dir / "a-file" / "logs"))  # the loader cannot tell
    before = d.master.config
    with pytest.raises(ConfigError) as info:
        d.master.update(None)
    assert "qsupervisord.log_dir: cannot create" in str(info.value)
    assert d.master.config is before and set(d.master.programs) == {"orders"}


def test_update_applies_node_name_and_fleet_interval_in_place_and_a_new_broker_restarts_the_herald(
        make: Any) -> None:
    d = make()
    d.master.herald.start()
    herald = d.world.herald
    assert herald is not None
    first = herald.received()
    assert [m["summary"]["node"] for m in first] == [socket.gethostname()]
    d.write(BOTH, node_name="web-9", fleet={"interval": "1s"})
    result = d.master.update(None)
    assert result.changes == (f"qsupervisord: changed (node_name {socket.gethostname()} -> "
                              "web-9, fleet.interval 5 -> 1)",)
    assert result.warnings == () and not result.touched  # no program rolls for either
    d.world.run()
    assert [m["summary"]["node"] for m in herald.received()] == ["web-9"]  # at once
    d.world.advance(1.0)
    assert [m["summary"]["interval"] for m in herald.received()] == [1.0]
    assert d.world.herald is herald  # the same herald: nothing it was started with changed

    d.write(BOTH, node_name="web-9", fleet={"interval": "1s"},
            broker="amqp://guest:guest@rabbit-2:5672/%2F")
    d.master.update(None)
    assert (herald.pid, signal.SIGTERM) in d.world.processes.signals
    d.world.processes.exits.append((herald.pid, signal_status(signal.SIGTERM)))
    d.master.handle_chld()
    assert d.world.herald is not herald and d.master.herald.pid == d.world.herald.pid  # at once
    d.master.shutdown(fast=True)
    assert (d.world.herald.pid, signal.SIGTERM) in d.world.processes.signals


class Answers:
    """A client connection as the re-exec sees one: what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.outstanding = 1
        self.sock, self._peer = socket.socketpair()  # what an exec would hand over

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def test_reexec_refuses_after_a_partial_update_and_while_shutting_down(make: Any) -> None:
    d = make()
    d.write({"orders": {"workers": 3}, "emails": {"workers": 1}})
    d.master.update(["orders"])
    asked = Answers()
    d.master.reexec.request(asked, 1, reload_all=False)
    assert "applied in part" in asked.sent[0]["error"]["message"]
    assert d.master.reexec.step is None
    d.master.update(None)
    d.master.shutdown(fast=False)
    asked = Answers()
    d.master.reexec.request(asked, 2, reload_all=False)
    assert asked.sent[0]["error"]["message"] == "the daemon is shutting down"


def test_reexec_waits_for_a_removed_program_then_refuses_with_the_reason(make: Any) -> None:
    d = make()
    d.world.obedient = False  # emails' worker keeps its job: the program stays STOPPING
    d.write({"orders": {"workers": 2}})
    d.master.update(None)
    d.world.run()
    asked = Answers()
    d.master.reexec.request(asked, 1, reload_all=False)
    assert d.master.reexec.step == "settling" and not asked.sent
    d.world.advance(1.1)
    message = asked.sent[0]["error"]["message"]
    assert message.startswith("the daemon did not settle within 1 s: program emails is being "
                              "removed"), message
    assert d.master.reexec.step is None


def test_the_state_names_every_descriptor_and_what_the_daemon_started_with(make: Any) -> None:
    d = make()
    state = json.loads(json.dumps(d.master.reexec.capture(None)))
    assert state["started_with"] == {"socket": f"{d.dir}/ctl.sock", "pidfile": f"{d.dir}/q.pid",
                                     "logfile": f"{d.dir}/q.log", "log_format": "auto"}
    assert state["config"]["texts"] == {d.path: Path(d.path).read_text()}
    assert [p["name"] for p in state["programs"]] == ["orders", "emails"]
    fds = set(handover.descriptors(state))
    assert d.server.sock.fileno() in fds
    for output in d.master.outputs.values():
        assert {output.read_fd, output.write_fd} <= fds
    for program in d.master.programs.values():
        assert program.leader is not None and program.leader.sock.fileno() in fds
        for worker in program.workers():
            assert worker.channel is not None and worker.stats is not None
            assert {worker.channel.fileno(), worker.stats.fd} <= fds


class Spawns:
    """os.posix_spawn and os.execv as a re-exec calls them, recorded instead of run: the
    check children exit when the test says; the exec fails as an execv can (ENOENT)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
        self.checks: list[list[str]] = []
        self.execs: list[list[str]] = []
        self.inheritable_at_exec: list[bool] = []
        self.blocked_at_exec: set[int] = set()
        self.world = world
        monkeypatch.setattr(os, "posix_spawn", self._spawn)
        monkeypatch.setattr(os, "execv", self._execv)

    def _spawn(self, path: str, argv: list[str], env: Any, file_actions: Any = ()) -> int:
        self.checks.append(argv)
        return self.world.new_pid()

    def _execv(self, path: str, argv: list[str]) -> None:
        self.execs.append(argv)
        self.blocked_at_exec = set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        raise FileNotFoundError(2, "No such file or directory")


def test_a_configuration_applied_during_the_check_is_checked_again(
        make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make()
    spawns = Spawns(monkeypatch, d.world)
    reexec = d.master.reexec
    asked = Answers()
    reexec.request(asked, 1, reload_all=False)
    assert reexec.step == "checking" and len(spawns.checks) == 1
    assert spawns.checks[0][-2] == "--check-resume"
    d.write({"orders": {"workers": 3}, "emails": {"workers": 1}})
    d.master.update(None)  # while the first check runs
    reexec.child_exited(reexec._child, 0)  # type: ignore[arg-type]
    assert len(spawns.checks) == 2 and not spawns.execs, "the new configuration is checked"
    reexec.child_exited(reexec._child, 0)  # type: ignore[arg-type]
    assert len(spawns.execs) == 1 and spawns.execs[0][-2] == "--resume"


def test_an_exec_that_fails_leaves_the_old_master_as_it_was(
        make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make()
    spawns = Spawns(monkeypatch, d.world)
    reexec = d.master.reexec
    asked = Answers()
    reexec.request(asked, 1, reload_all=True)
    reexec.child_exited(reexec._child, 0)  # type: ignore[arg-type]
    assert len(spawns.execs) == 1
    # The signals were blocked for the exec, and are not any more.
    assert {signal.SIGTERM, signal.SIGCHLD} <= spawns.blocked_at_exec
    assert not set(signal.pthread_sigmask(signal.SIG_BLOCK, [])) & set(BLOCKED)
    assert asked.sent[0]["error"]["message"].startswith("cannot execute ")
    assert reexec.step is None and reexec.rolling == []
    assert not d.server.sock.get_inheritable()
    for program in d.master.programs.values():
        assert program.leader is not None and not program.leader.sock.get_inheritable()
    # It serves on: the workers' exits still reach it.
    d.workers_of("orders")[0].exit(0, reason="max_jobs")
    d.world.run()
    assert d.program("orders").serving() == 2
