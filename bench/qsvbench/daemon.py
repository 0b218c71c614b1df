"""A qsupervisord under benchmark: configuration in a temporary directory, started in the
foreground in a process group of its own, always torn down with its whole tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from qsupervisor.ctl.client import Client

from .common import (
    APPS_DIR,
    BROKER_URL,
    QSUPERVISORCTL,
    QSUPERVISORD,
    alive,
    wait_until,
)


def program(queue: str, handler: str = "bench_handlers:noop", workers: int = 1,
            **settings: Any) -> dict[str, Any]:
    return {"handler": handler, "queue": queue, "workers": workers, "stop_timeout": "10s",
            **settings}


class Daemon:
    def __init__(self, programs: dict[str, Any], **settings: Any) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qsv-bench-"))
        self.socket = str(self.dir / "qsv.sock")
        self.config_path = self.dir / "queues.yaml"
        section = {
            "broker": BROKER_URL,
            "socket": self.socket,
            "pidfile": str(self.dir / "qsv.pid"),
            "logfile": str(self.dir / "qsupervisord.log"),
            "log_dir": str(self.dir / "logs"),
            "log_format": "json",
            "log_level": "info",
            "path": [str(APPS_DIR)],
            **settings,
        }
        self.config_path.write_text(yaml.safe_dump({"qsupervisord": section,
                                                    "programs": programs}, sort_keys=False))
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.client = Client(self.socket, timeout=60)
        self.seen: set[int] = set()

    # -- life -----------------------------------------------------------------------------

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        out = open(self.dir / "qsupervisord.out", "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [QSUPERVISORD, "-n", "-c", str(self.config_path)], stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})})
        out.close()
        return self

    def wait_socket(self, timeout: float = 60) -> None:
        def up() -> bool:
            self._check_alive()
            try:
                self.client.call("version")
                return True
            except Exception:
                return False
        wait_until(up, timeout, "the control socket", interval=0.01)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"qsupervisord exited {self.proc.returncode}: {self.output()}")

    def output(self) -> str:
        parts = []
        for path in (self.dir / "qsupervisord.out", self.dir / "qsupervisord.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.teardown()

    def teardown(self) -> None:
        """Ask politely, then SIGKILL the process group and anything of ours left."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.remember_pids()
                    subprocess.run([QSUPERVISORCTL, "-s", self.socket, "shutdown"],
                                   capture_output=True, timeout=30)
                except Exception:
                    pass
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._kill_rest()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_rest(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in self.seen:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
                if alive(pid) and title.startswith(b"qsupervisord"):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- talking to it -----------------------------------------------------------------------

    def status(self, queues: bool = False) -> dict[str, Any]:
        result = self.client.call("status", {"names": [], "queues": queues})
        self._remember(result)
        return result

    def _remember(self, status: dict[str, Any]) -> None:
        self.seen.add(int(status["master"]["pid"]))
        for prog in status.get("programs", {}).values():
            if prog.get("leader_pid"):
                self.seen.add(int(prog["leader_pid"]))
            self.seen.update(int(w["pid"]) for w in prog["workers"] if w["pid"])

    def remember_pids(self) -> None:
        try:
            self.status()
        except Exception:
            pass

    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # -n: the process we started is the master

    def leader_pid(self, name: str) -> int:
        return int(self.status()["programs"][name]["leader_pid"])

    def worker_pids(self, name: str, include_old: bool = False) -> list[int]:
        workers = self.status()["programs"][name]["workers"]
        return [int(w["pid"]) for w in workers if w["pid"] and (
            include_old or not (w["draining"] or w.get("superseded")))]

    def settled(self, name: str) -> bool:
        """Every worker of the program RUNNING, none draining or superseded."""
        self._check_alive()
        prog = self.status()["programs"].get(name)
        if prog is None or prog["state"] != "RUNNING":
            return False
        workers = prog["workers"]
        return (len(workers) == prog["desired"]
                and all(w["state"] == "RUNNING" and w["pid"] and not w["draining"]
                        and not w.get("superseded") for w in workers))

    def wait_settled(self, name: str, timeout: float = 120) -> None:
        self.wait_socket()
        wait_until(lambda: self.settled(name), timeout, f"every worker of {name} RUNNING",
                   interval=0.05)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([QSUPERVISORCTL, "-s", self.socket, *args], capture_output=True,
                              text=True, timeout=timeout)
