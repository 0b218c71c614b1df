"""The fleet view's pure parts and the master's side of it: the announcement that goes on
the broker (nothing secret in it, nothing unlisted), the herald's table (stale after three
of a daemon's intervals, gone after ten), the `fleet` command (never waits on the herald
longer than its bound), the herald's respawn, and the two configuration keys."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from qsupervisor.config import DaemonConfig, FleetConfig, load_config
from qsupervisor.herald import announce
from qsupervisor.herald.announce import Announcement
from qsupervisor.herald.table import FleetTable
from qsupervisor.master import commands, fleet
from qsupervisor.master.herald import HeraldLink
from qsupervisor.master.program import ProgramRuntime

from .config_files import daemon_file, problems, program, write
from .fakes import World, exit_status
from .test_commands_status import FakeMaster, ask, result

PASSWORD = "s3cret-Pa55"
SECRET_ENV = "sk_live_abcdef123456"


def heard(node: str, interval: float = 5.0, pid: int = 100) -> Announcement:
    return Announcement(node=node, pid=pid, version="1.0", uptime=1.0, interval=interval,
                        sent=0.0, programs=({"name": "orders"},))


# -- the table ---------------------------------------------------------------------------------


def test_a_daemon_is_stale_after_three_of_its_intervals_and_gone_after_ten() -> None:
    table = FleetTable()
    table.heard(heard("a", interval=5.0), now=100.0)
    assert [(n["node"], n["stale"]) for n in table.view(115.0)] == [("a", False)]
    assert [(n["node"], n["stale"]) for n in table.view(115.1)] == [("a", True)]
    assert [n["node"] for n in table.view(150.0)] == ["a"]
    assert table.view(150.1) == []
    assert len(table) == 0


def test_each_daemon_is_judged_by_its_own_interval() -> None:
    table = FleetTable()
    table.heard(heard("fast", interval=1.0), now=0.0)
    table.heard(heard("slow", interval=60.0), now=0.0)
    assert {n["node"]: n["stale"] for n in table.view(2.0)} == {"fast": False, "slow": False}
    assert {n["node"]: n["stale"] for n in table.view(30.0)} == {"slow": False}


def test_a_new_announcement_makes_a_stale_daemon_fresh_and_a_restart_replaces_it() -> None:
    table = FleetTable()
    table.heard(heard("a", pid=1), now=0.0)
    assert table.view(20.0)[0]["stale"] is True
    table.heard(heard("a", pid=2), now=20.0)
    rows = table.view(21.0)
    assert [(r["node"], r["pid"], r["stale"], r["age"]) for r in rows] == [("a", 2, False, 1.0)]


# -- the announcement --------------------------------------------------------------------------


def secret_world() -> tuple[World, ProgramRuntime, DaemonConfig]:
    daemon = DaemonConfig(broker=(f"amqp://app:{PASSWORD}@rabbit-1:5672/shop",),
                          node_name="web-3", fleet=FleetConfig(interval=2.0))
    world = World(daemon=daemon)
    runtime = ProgramRuntime(program("orders", workers=2,
                                     environment=(("STRIPE_KEY", SECRET_ENV),)), world)
    runtime.start()
    world.run()
    return world, runtime, daemon


def test_the_announcement_carries_the_figures_and_nothing_secret() -> None:
    world, runtime, daemon = secret_world()
    world.worker(0).start_job("msg-id-that-must-not-leak")
    summary = fleet.summary([runtime], daemon, world.clock.time() - 30, world.clock)
    # Whatever the master's summary grows, only the listed fields are published.
    summary["broker"] = daemon.broker[0]
    summary["programs"][0]["environment"] = {"STRIPE_KEY": SECRET_ENV}
    summary["programs"][0]["job_id"] = "msg-id-that-must-not-leak"
    body = announce.encode(summary, {"orders": 12}, sent=1234.5)
    text = body.decode()
    for secret in (PASSWORD, SECRET_ENV, "STRIPE_KEY", "msg-id-that-must-not-leak", "rabbit-1"):
        assert secret not in text
    data = json.loads(body)
    assert set(data) == {"v", *announce.DAEMON_FIELDS, "programs"}
    assert data["node"] == "web-3" and data["interval"] == 2.0 and data["uptime"] == 30.0
    assert data["programs"] == [{
        "name": "orders", "state": "RUNNING", "queue": "orders", "workers": 2, "desired": 2,
        "consuming": 2, "busy": 1, "jobs_per_s": 0.0, "failures_per_min": 0,
        "queue_depth": 12}]
    decoded = announce.decode(body)
    assert decoded is not None and decoded.node == "web-3" and decoded.programs[0]["busy"] == 1


def test_jobs_per_second_and_failures_per_minute_come_from_the_last_minute() -> None:
    summary = {"node": "a", "pid": 1, "version": "1", "uptime": 1.0, "interval": 5.0,
               "programs": [{"name": "p", "queue": "p", "done_last_minute": 90,
                             "failed_last_minute": 4}]}
    program_entry = json.loads(announce.encode(summary, {}, 0.0))["programs"][0]
    assert (program_entry["jobs_per_s"], program_entry["failures_per_min"]) == (1.5, 4)
    assert program_entry["queue_depth"] is None  # not read: unknown, not zero


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"v": 2, "node": "a", "pid": 1, "interval": 5}',
    b'{"v": 1, "node": "", "pid": 1, "interval": 5}',
    b'{"v": 1, "node": "a\\u001b[31m", "pid": 1, "interval": 5}',
    b'{"v": 1, "node": "a", "pid": "1", "interval": 5}',
    b'{"v": 1, "node": "a", "pid": 1, "interval": 0}',
    b'{"v": 1, "node": "a", "pid": 1, "interval": 5, "programs": 3, "pad": "' + b"x" * 300_000
    + b'"}',
])
def test_bodies_that_are_not_announcements_are_skipped(body: bytes) -> None:
    assert announce.decode(body) is None


def test_a_decoded_program_has_exactly_the_known_fields_typed() -> None:
    body = json.dumps({"v": 1, "node": "a", "pid": 1, "interval": 5, "programs": [
        {"name": "p", "busy": "7", "queue_depth": 3, "evil": "x"}, "junk"]}).encode()
    decoded = announce.decode(body)
    assert decoded is not None
    assert decoded.programs == ({**{k: None for k in announce.PROGRAM_FIELDS},
                                 "name": "p", "queue_depth": 3},)


# -- the master's side ----------------------------------------------------------------------


@pytest.fixture
def master(tmp_path: Path) -> Any:
    made = FakeMaster(World(), tmp_path, program("orders", workers=2), program("mail"))
    made.running("orders", "mail")
    made.herald.start()
    yield made
    made.close()


def test_the_herald_gets_a_summary_at_once_and_then_every_interval(master: FakeMaster) -> None:
    herald = master.world.herald
    assert herald is not None
    first = herald.received()
    assert [m["op"] for m in first] == ["announce"]
    assert [p["name"] for p in first[0]["summary"]["programs"]] == ["orders", "mail"]
    master.world.advance(4.9)
    assert herald.received() == []
    master.world.advance(0.1)
    assert [m["op"] for m in herald.received()] == ["announce"]


def test_fleet_replies_with_the_heralds_view_filtered_by_program(master: FakeMaster) -> None:
    herald = master.world.herald
    assert herald is not None
    herald.received()
    conn = ask(master, "fleet", program="mail")
    assert conn.sent == []
    question = herald.received()[0]
    assert question["op"] == "fleet"
    nodes = [{"node": "a", "pid": 1, "programs": [{"name": "orders"}, {"name": "mail"}]},
             {"node": "b", "pid": 2, "programs": [{"name": "orders"}]}]
    herald.send(ev="fleet", rid=question["rid"], connected=True, error=None, since=3.0,
                nodes=nodes, truncated=0)
    master.settle()
    reply = result(conn)
    assert reply["available"] is True and reply["connected"] is True
    assert reply["nodes"] == [{"node": "a", "pid": 1, "programs": [{"name": "mail"}]}]
    assert reply["herald_pid"] == herald.pid


def test_fleet_does_not_wait_longer_than_its_bound_for_a_silent_herald(
        master: FakeMaster) -> None:
    conn = ask(master, "fleet")
    master.world.advance(commands.FLEET_WAIT - 0.1)
    assert conn.sent == []
    master.world.advance(0.1)
    reply = result(conn)
    assert reply["available"] is False and reply["nodes"] == []
    assert "did not answer" in reply["error"]


def test_a_dead_herald_is_started_again_after_a_backoff_and_not_after_stop(
        master: FakeMaster) -> None:
    first = master.world.herald
    assert first is not None
    conn = ask(master, "fleet")
    master.herald.child_exited(first.pid, exit_status(1))
    assert result(conn)["error"] == "the herald exited before answering"
    assert master.herald.pid is None
    assert result(ask(master, "fleet"))["available"] is False  # at once: nobody to ask
    master.world.advance(1.0)
    second = master.world.herald
    assert second is not None and second.pid != first.pid and master.herald.pid == second.pid
    master.herald.stop()
    assert (second.pid, 15) in master.world.processes.signals
    master.herald.child_exited(second.pid, exit_status(0))
    master.world.advance(120.0)
    assert master.world.herald is second and master.herald.pid is None


def test_no_herald_can_be_forked_and_the_daemon_runs_on(tmp_path: Path) -> None:
    world = World()
    world.fork_error = "Resource temporarily unavailable"
    link = HeraldLink(world, lambda: {})
    link.start()
    assert link.pid is None and not link.ask(lambda _answer: None)
    world.fork_error = None
    world.advance(1.0)
    assert link.pid is not None


# -- configuration ------------------------------------------------------------------------------


def test_node_name_defaults_to_the_host_name_and_fleet_to_five_seconds(tmp_path: Path) -> None:
    loaded = load_config(daemon_file(tmp_path, "log_level: info"))
    assert loaded.daemon.node_name == socket.gethostname()
    assert loaded.daemon.fleet.interval == 5.0
    loaded = load_config(write(tmp_path / "queues.yaml", """
        qsupervisord:
          node_name: web-3
          fleet: {interval: 0.5s}
        programs: {}
        """))
    assert (loaded.daemon.node_name, loaded.daemon.fleet.interval) == ("web-3", 0.5)


@pytest.mark.parametrize("extra,message", [
    ("node_name: ''", "qsupervisord.node_name: expected a name for this daemon such as 'web-3', "
                      "got ''"),
    ('node_name: "web\\t3"', "qsupervisord.node_name: a node name must be printable (no control "
                             "characters), got 'web\\t3'"),
    (f"node_name: {'x' * 101}", "qsupervisord.node_name: a node name is at most 100 characters, "
                                "got 101"),
    ("fleet: {interval: 0.01s}", "qsupervisord.fleet.interval: expected a duration between "
                                 "100ms and 1h, got '0.01s'"),
    ("fleet: {every: 5s}", "qsupervisord.fleet.every: unknown key"),
])
def test_bad_fleet_settings_are_reported(tmp_path: Path, extra: str, message: str) -> None:
    path = daemon_file(tmp_path, extra)
    assert [p.split(": ", 1)[1] for p in problems(path)] == [message]
