"""qsupervisord as a detached daemon (pidfile, a second daemon, a stale pidfile) and
`qsupervisord --check`."""

from __future__ import annotations

import resource
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from .daemon import MakeDaemon, worker_pids
from .harness import (
    DEADLINE,
    QSUPERVISORD,
    STOP_TIMEOUT,
    Ledger,
    alive,
    dead_pid,
    pid_alive,
    proc_title,
    program,
    wait_for,
)
from .rabbit import Broker


def test_daemonized_start_writes_the_pidfile_refuses_a_second_daemon_and_shuts_down(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("bg")
    daemon = daemons({"bg": program(queue, ledger)})
    daemon.start(foreground=False)  # returns once `qsupervisord -c FILE` has exited 0

    master = daemon.pidfile_pid()
    assert master is not None and pid_alive(master)
    assert daemon.master_pid() == master
    assert proc_title(master) == f"qsupervisord: master [{daemon.config_path}]"
    ledger.wait_for_ids([broker.publish(queue)])

    second = subprocess.run([QSUPERVISORD, "-c", str(daemon.config_path)],
                            capture_output=True, text=True, timeout=DEADLINE)
    assert second.returncode == 1, second
    assert f"already running (pid {master}" in second.stderr, second.stderr
    assert daemon.pidfile_pid() == master and daemon.master_pid() == master

    pids = daemon.tree_pids()
    result = daemon.ctl("shutdown")
    assert result.returncode == 0, str(result)
    wait_for(lambda: not alive(pids), timeout=STOP_TIMEOUT + DEADLINE,
             what=lambda: f"the daemon's processes to exit; alive: {alive(pids)}")
    wait_for(lambda: not daemon.pidfile.exists(), what="the pidfile to be removed")
    assert not daemon.socket.exists()


def test_daemonized_start_replaces_a_stale_pidfile(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"stale": program(broker.declare("stale"), ledger)})
    stale = dead_pid()
    daemon.pidfile.write_text(f"{stale}\n")

    daemon.start(foreground=False)

    master = daemon.pidfile_pid()
    assert master is not None and master != stale and pid_alive(master)
    assert daemon.master_pid() == master


def test_check_accepts_a_good_file_and_names_file_line_and_key_in_a_bad_one(
        tmp_path: Path, ledger: Ledger) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("programs:\n  orders:\n    handler: e2eapp.handlers:work\n")
    result = subprocess.run([QSUPERVISORD, "--check", "-c", str(good)],
                            capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 0, result
    assert "OK" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("programs:\n  orders:\n    handler: e2eapp.handlers:work\n"
                   "    workers: four\n    colour: blue\n")
    result = subprocess.run([QSUPERVISORD, "--check", "-c", str(bad)],
                            capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2, result
    errors = result.stderr.splitlines()
    assert f"{bad}:4: programs.orders.workers: expected an integer >= 0, got 'four'" in errors
    assert any(e.startswith(f"{bad}:5: programs.orders.colour: unknown key") for e in errors)


def test_systemd_notify_ready_reloading_stopping_and_no_child_inherits_the_socket(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """What Type=notify relies on: READY=1 once the socket listens, RELOADING=1/READY=1
    around `update` (what ExecReload runs), STOPPING=1 at a shutdown, each with a STATUS
    line for `systemctl status`; leaders and workers never see $NOTIFY_SOCKET, so none can
    speak for the service."""
    directory = Path(tempfile.mkdtemp(prefix="qsv-notify-", dir="/tmp"))  # short: sun_path
    path = directory / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(DEADLINE)

    def receive() -> str:
        return listener.recv(4096).decode()

    try:
        queue = broker.declare("notified")
        daemon = daemons({"notified": program(queue, ledger,
                                              handler="e2eapp.handlers:print_notify_socket")})
        daemon.start(env={"NOTIFY_SOCKET": str(path)}, wait=False)
        assert receive() == "READY=1\nSTATUS=running"
        assert daemon.ctl("pid").returncode == 0  # the socket listens once READY=1 is sent
        daemon.wait_running()
        ledger.wait_for_ids([broker.publish(queue)])
        assert "NOTIFY_SOCKET=None" in daemon.program_log("notified")

        assert daemon.ctl("update").returncode == 0
        assert receive() == "RELOADING=1\nSTATUS=applying the configuration"
        assert receive() == "READY=1\nSTATUS=running"

        assert daemon.shutdown().returncode == 0
        assert receive() == "STOPPING=1\nSTATUS=stopping: workers finish their jobs"
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def _open_files(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for {pid}")


def test_the_master_raises_its_open_files_limit_and_its_children_keep_the_first_one(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    # Started with systemd's default soft limit of 1024: the master holds two descriptors
    # per worker, so it takes the hard limit; leaders and workers (user code, which may
    # use select()) keep 1024.
    queue = broker.declare("nofile")
    daemon = daemons({"nofile": program(queue, ledger, workers=2)})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        daemon.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    status = daemon.status()
    assert _open_files(daemon.master_pid()) == (hard, hard)
    children = [status["programs"]["nofile"]["leader_pid"], status["master"]["herald_pid"],
                *worker_pids(status, "nofile").values()]
    assert [_open_files(pid) for pid in children] == [(1024, hard)] * 4
    ledger.wait_for_ids(broker.publish_many(queue, 2))
