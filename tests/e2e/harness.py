"""Helpers shared by the end-to-end tests: polling with a deadline, processes, the test
configurations and the handlers' ledger. RabbitMQ is in `rabbit.py`, the daemon and the
control tool in `daemon.py`.

Nothing here sleeps in place of a condition: `wait_for` polls a predicate until a
generous deadline and fails saying what did not happen. Deadlines are about correctness
(the thing must happen at all), never about speed; speed belongs in bench/.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import (
    Any,
    Callable,
    TypeVar,
    Union,
)

import pytest
import yaml

import qsupervisor

BIN_DIR = Path(sys.executable).parent
QSUPERVISORD = str(BIN_DIR / "qsupervisord")
QSUPERVISORCTL = str(BIN_DIR / "qsupervisorctl")
APPS_DIR = Path(__file__).resolve().parent / "apps"
PACKAGE_ROOT = Path(qsupervisor.__file__).resolve().parents[1]  # the checkout under test
BROKER_URL = os.environ.get("QSUPERVISOR_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")
DEADLINE = 30.0  # seconds; generous on purpose, a slow CI machine must not fail a test
STOP_TIMEOUT = 5.0  # the programs' stop_timeout in test configurations

T = TypeVar("T")
Text = Union[str, Callable[[], str]]


# -- waiting ------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float = DEADLINE, what: Text = "",
             interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail with
    `what` (a string, or a callable for a message computed at the time of failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:g}s waiting for: {message or predicate}")
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True if `pid` runs. A zombie counts as gone: our init does not reap orphans."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def proc_title(pid: int) -> str:
    """The process title as `ps` shows it (setproctitle rewrites /proc/PID/cmdline)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        raw = f.read()
    return " ".join(p.decode() for p in raw.split(b"\0") if p).strip()


def process_group(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[2])


def alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if pid_alive(pid)]


def dead_pid() -> int:
    """The pid of a process that has exited: what a stale pidfile holds."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- configuration ----------------------------------------------------------------------------


def daemon_section(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """Every path inside `workdir`; handlers come from tests/e2e/apps."""
    section: dict[str, Any] = {
        "broker": BROKER_URL,
        "socket": str(workdir / "qsv.sock"),
        "pidfile": str(workdir / "qsv.pid"),
        "logfile": str(workdir / "qsupervisord.log"),
        "log_dir": str(workdir / "logs"),
        "log_format": "json",
        "log_level": "info",
        "path": [str(APPS_DIR)],
    }
    section.update(overrides)
    return section


def program(queue: str, ledger: Ledger, handler: str = "e2eapp.handlers:work",
            workers: int = 1, environment: dict[str, str] | None = None,
            **settings: Any) -> dict[str, Any]:
    env = {"E2E_LEDGER": str(ledger.path), **(environment or {})}
    return {"handler": handler, "queue": queue, "workers": workers,
            "stop_timeout": f"{STOP_TIMEOUT:g}s", "environment": env, **settings}


RUNTIME_HANDLER = "e2eapp.runtime:work"
# Retries that come back quickly and exactly on time (no jitter), so a test can check
# every gap against its lower bound.
QUICK_BACKOFF = {"initial": "0.2s", "factor": 2, "max": "5s", "jitter": 0}


def runtime_program(queue: str, ledger: Ledger, **settings: Any) -> dict[str, Any]:
    """A program of the worker-runtime tests: e2eapp.runtime's handler, quick retries and
    a short stop_timeout (a test's teardown must not wait on a job that blocks)."""
    settings.setdefault("handler", RUNTIME_HANDLER)
    settings.setdefault("stop_timeout", "2s")
    settings.setdefault("backoff", dict(QUICK_BACKOFF))
    return program(queue, ledger, **settings)


def write_config(path: Path, daemon: dict[str, Any], programs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"qsupervisord": daemon, "programs": programs},
                                   sort_keys=False))
    return path


def write_module(path: Path, text: str) -> None:
    """Write a Python module so that every importer sees the new text: a cached .pyc is
    keyed on the source's mtime in whole seconds, so move the mtime forward by more than
    that even if the file was written a moment ago."""
    previous = path.stat().st_mtime if path.exists() else 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    mtime = max(time.time(), previous + 2.0)
    os.utime(path, (mtime, mtime))


# -- the ledger -------------------------------------------------------------------------------


class Ledger:
    """The file the test handler appends one JSON line per job to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # A line is written in one append; a partial last line cannot happen, but a
        # reader racing a writer is cheap to guard against.
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def counts(self) -> Counter[str]:
        return collections.Counter(e["id"] for e in self.entries())

    def missing(self, ids: Iterable[str]) -> list[str]:
        seen = self.counts()
        return [i for i in ids if i not in seen]

    def wait_for_ids(self, ids: Iterable[str], timeout: float = DEADLINE) -> list[dict[str, Any]]:
        wanted = list(ids)
        wait_for(lambda: not self.missing(wanted), timeout=timeout,
                 what=lambda: f"the ledger to record all {len(wanted)} jobs; missing "
                              f"{self.missing(wanted)[:10]}")
        wanted_set = set(wanted)
        return [e for e in self.entries() if e["id"] in wanted_set]

    def entry(self, msg_id: str) -> dict[str, Any]:
        return self.wait_for_ids([msg_id])[-1]
