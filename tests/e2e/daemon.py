"""The daemon under test and the ways to talk to it: qsupervisorctl (as ourselves or as
another user), a bare socket, and helpers that read `status --json` replies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from .harness import (
    DEADLINE,
    PACKAGE_ROOT,
    QSUPERVISORCTL,
    QSUPERVISORD,
    STOP_TIMEOUT,
    alive,
    pid_alive,
    proc_title,
    process_group,
    wait_for,
    write_config,
)

# -- qsupervisorctl and the socket --------------------------------------------------------------


@dataclass(frozen=True)
class CtlResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"qsupervisorctl {' '.join(self.args)} -> exit {self.returncode}\n"
                f"stdout: {self.stdout.strip()}\nstderr: {self.stderr.strip()}")


def run_ctl(target: list[str], *args: str, as_json: bool = True, timeout: float = 60.0,
            command: list[str] | None = None, **popen: Any) -> CtlResult:
    """Run qsupervisorctl (or `command`, another way to start it) once."""
    argv = [*target, *(["--json"] if as_json else []), *args]
    proc = subprocess.run([*(command or [QSUPERVISORCTL]), *argv], capture_output=True,
                          text=True, timeout=timeout, **popen)
    return CtlResult(argv, proc.returncode, proc.stdout, proc.stderr)


def run_ctl_as(uid: int, socket_path: Path, *args: str) -> CtlResult:
    """Run qsupervisorctl as another user, against the socket (no config file to read).

    That user must be able to execute the interpreter: a virtualenv under /root is not
    reachable for others, so the system python3 runs the package from this checkout,
    with the virtualenv's site-packages for its dependencies."""
    interpreter = sys.executable
    if not _usable_by_others(interpreter):
        interpreter = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), sysconfig.get_paths()["purelib"]])}
    return run_ctl(["-s", str(socket_path)], *args,
                   command=[interpreter, "-m", "qsupervisor.ctl.main"],
                   user=uid, group=uid, extra_groups=[], cwd="/", env=env)


def _usable_by_others(path: str) -> bool:
    real = Path(os.path.realpath(path))
    try:
        return (all(os.stat(d).st_mode & 0o001 for d in real.parents)
                and bool(os.stat(real).st_mode & 0o001))
    except OSError:
        return False


class RawClient:
    """A bare connection to the control socket, for sending what qsupervisorctl never would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(str(path))
        self._lines = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> dict[str, Any]:
        line = self._lines.readline()
        assert line, "the daemon closed the connection without a reply"
        return json.loads(line)

    def close(self) -> None:
        self._lines.close()
        self.sock.close()


# -- the daemon -------------------------------------------------------------------------------

MakeDaemon = Callable[..., "Daemon"]  # the `daemons` fixture: (programs, **settings) -> Daemon


class Daemon:
    """One qsupervisord under test. `teardown` always leaves no process of its tree."""

    def __init__(self, workdir: Path, daemon: dict[str, Any], programs: dict[str, Any]) -> None:
        self.workdir = workdir
        self.settings = daemon
        self.config_path = workdir / "queues.yaml"
        self.socket = Path(daemon["socket"])
        self.pidfile = Path(daemon["pidfile"])
        self.logfile = Path(daemon["logfile"])
        self.log_dir = Path(daemon["log_dir"])
        self.proc: subprocess.Popen | None = None
        self.pgids: set[int] = set()
        self.seen_pids: set[int] = set()
        self.write(programs)

    def write(self, programs: dict[str, Any]) -> None:
        write_config(self.config_path, self.settings, programs)

    # -- starting and stopping ------------------------------------------------------------

    def start(self, foreground: bool = True, wait: bool = True,
              env: dict[str, str] | None = None) -> None:
        """`env`: variables added to the daemon's environment."""
        out = open(self.workdir / "qsupervisord.out", "ab")
        argv = [QSUPERVISORD, "-c", str(self.config_path), *(["-n"] if foreground else [])]
        # Its own process group: the teardown can kill the whole tree, orphans included.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
        out.close()
        if foreground:
            self.proc = proc
            self.pgids.add(proc.pid)
        else:
            code = proc.wait(DEADLINE)
            assert code == 0, f"qsupervisord -c exited {code}: {self.output()}"
            wait_for(self.master_from_pidfile, what=f"a live master pid in {self.pidfile}")
        if wait:
            self.wait_running()

    def pidfile_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def master_from_pidfile(self) -> int | None:
        """The pidfile's pid once it names our live master (not a stale pid)."""
        pid = self.pidfile_pid()
        return pid if pid is not None and pid in self.find_masters() else None

    def find_masters(self) -> set[int]:
        """Live masters running our configuration, found by their process title: the
        teardown's way to a detached daemon whose start failed half-way."""
        title = f"qsupervisord: master [{self.config_path}]"
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if proc_title(int(entry)) == title and pid_alive(int(entry)):
                        found.add(int(entry))
                except OSError:
                    continue
        return found

    def output(self) -> str:
        path = self.workdir / "qsupervisord.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def shutdown(self) -> CtlResult:
        pids = self.tree_pids()
        result = self.ctl("shutdown")
        assert result.returncode == 0, str(result)
        wait_for(lambda: not alive(pids), timeout=STOP_TIMEOUT + DEADLINE,
                 what=lambda: f"every process of the tree to exit; alive: {alive(pids)}")
        if self.proc is not None:
            assert self.proc.wait(DEADLINE) == 0, self.output()
        return result

    def teardown(self) -> None:
        """Shut down politely if possible, then kill whatever is left of the tree."""
        if self.is_up():
            try:
                self.seen_pids.update(self.tree_pids())
                run_ctl(["-s", str(self.socket)], "shutdown", timeout=STOP_TIMEOUT + 15)
            except (subprocess.TimeoutExpired, AssertionError, ValueError):
                pass
        if self.proc is not None:
            try:
                self.proc.wait(STOP_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                pass
        self.kill_tree()

    def kill_tree(self) -> None:
        for master in self.find_masters():
            try:
                self.pgids.add(process_group(master))
            except OSError:
                pass
        for pgid in self.pgids:
            if pgid > 1 and pgid != os.getpgrp():
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self.seen_pids:
            # Only our own tree: a reused pid of some other process is left alone.
            try:
                if pid_alive(pid) and proc_title(pid).startswith("qsupervisord"):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # gone in the meantime
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)

    def is_up(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return bool(self.find_masters())

    # -- talking to it -------------------------------------------------------------------------

    def ctl(self, *args: str, as_json: bool = True, timeout: float = 60.0) -> CtlResult:
        return run_ctl(["-c", str(self.config_path)], *args, as_json=as_json, timeout=timeout)

    def ctl_argv(self, *args: str) -> list[str]:
        """The command line of `ctl`, for a client the test runs in the background."""
        return [QSUPERVISORCTL, "-c", str(self.config_path), *args]

    def status(self, *names: str) -> dict[str, Any]:
        """`status --json`; exit 3 (a worker not RUNNING) still carries the picture."""
        result = self.ctl("status", *names)
        assert result.returncode in (0, 3), str(result)
        status = result.json()
        self.seen_pids.update(tree_pids(status))
        return status

    def master_pid(self) -> int:
        result = self.ctl("pid")
        assert result.returncode == 0, str(result)
        return int(result.json()["master"])

    def tree_pids(self) -> set[int]:
        return tree_pids(self.status())

    def wait_running(self, *names: str) -> dict[str, Any]:
        """Wait until every (named) program is RUNNING with all its workers RUNNING and
        none draining; return that status."""
        latest: dict[str, Any] = {}
        last: list[CtlResult] = []

        def settled() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"qsupervisord exited {self.proc.returncode}: {self.output()}")
            result = self.ctl("status", *names)
            last[:] = [result]
            if result.returncode not in (0, 3):
                return False
            latest.clear()
            latest.update(result.json())
            self.seen_pids.update(tree_pids(latest))
            return result.returncode == 0 and all(
                _program_settled(p) for p in latest.get("programs", {}).values())

        wait_for(settled, what=lambda: f"every worker RUNNING; last status: {last[0]}"
                                       f"\ndaemon output: {self.output()}")
        return dict(latest)

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logfile.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def program_log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


def _program_settled(program: dict[str, Any]) -> bool:
    current = [w for w in program["workers"] if not w["draining"] and not w.get("superseded")]
    return (program["state"] == "RUNNING" and len(current) == program["desired"]
            and len(current) == len(program["workers"])
            and all(w["state"] == "RUNNING" and w["pid"] for w in current))


def tree_pids(status: dict[str, Any]) -> set[int]:
    """The master, its herald, every leader and every worker pid that a status reply names."""
    pids = {int(status["master"]["pid"])}
    if status["master"].get("herald_pid"):
        pids.add(int(status["master"]["herald_pid"]))
    for program in status.get("programs", {}).values():
        if program.get("leader_pid"):
            pids.add(int(program["leader_pid"]))
        pids.update(int(w["pid"]) for w in program["workers"]
                    if w["pid"] and w["state"] in ("STARTING", "RUNNING", "STOPPING"))
    return pids


def worker_pids(status: dict[str, Any], name: str) -> dict[int, int]:
    """slot -> pid of the program's current workers (not those draining, nor those still
    serving until their successor runs)."""
    return {w["slot"]: w["pid"] for w in status["programs"][name]["workers"]
            if not w["draining"] and not w.get("superseded")}


def busy_worker(status: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A worker of the program that is in the middle of a job, if any."""
    return next((w for w in status["programs"][name]["workers"]
                 if w["state"] == "RUNNING" and w["job"]), None)


def teardown_all(daemons: list[Daemon]) -> None:
    """Tear down every daemon a test made, the last first; the first failure is raised
    once all of them have had their turn."""
    failures: list[BaseException] = []
    for daemon in reversed(daemons):
        try:
            daemon.teardown()
        except Exception as exc:  # tear down the others all the same
            failures.append(exc)
    if failures:
        raise failures[0]
