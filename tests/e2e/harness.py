"""Helpers for the end-to-end tests: the real daemon and control tool as subprocesses,
a real RabbitMQ through pika, the handlers' ledger, and polling with a deadline.

Nothing here sleeps in place of a condition: `wait_for` polls a predicate until a
generous deadline and fails saying what did not happen. Deadlines are about correctness
(the thing must happen at all), never about speed; speed belongs in bench/.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Counter, Dict, Iterable, List, Optional, Set, TypeVar, Union

import pika
import pika.exceptions
import pytest
import yaml

BIN_DIR = Path(sys.executable).parent
QSUPERVISORD = str(BIN_DIR / "qsupervisord")
QSUPERVISORCTL = str(BIN_DIR / "qsupervisorctl")
APPS_DIR = Path(__file__).resolve().parent / "apps"
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


def alive(pids: Iterable[int]) -> List[int]:
    return [pid for pid in pids if pid_alive(pid)]


def dead_pid() -> int:
    """The pid of a process that has exited: what a stale pidfile holds."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- configuration ----------------------------------------------------------------------------


def daemon_section(workdir: Path, **overrides: Any) -> Dict[str, Any]:
    """Every path inside `workdir`; handlers come from tests/e2e/apps and workdir/code."""
    section: Dict[str, Any] = {
        "broker": BROKER_URL,
        "socket": str(workdir / "qsv.sock"),
        "pidfile": str(workdir / "qsv.pid"),
        "logfile": str(workdir / "qsupervisord.log"),
        "log_dir": str(workdir / "logs"),
        "log_format": "json",
        "log_level": "info",
        "path": [str(APPS_DIR), str(workdir / "code")],
    }
    section.update(overrides)
    return section


def program(queue: str, ledger: "Ledger", handler: str = "e2eapp.handlers:work",
            workers: int = 1, environment: Optional[Dict[str, str]] = None,
            **settings: Any) -> Dict[str, Any]:
    env = {"E2E_LEDGER": str(ledger.path), **(environment or {})}
    return {"handler": handler, "queue": queue, "workers": workers,
            "stop_timeout": f"{STOP_TIMEOUT:g}s", "environment": env, **settings}


def write_config(path: Path, daemon: Dict[str, Any], programs: Dict[str, Any]) -> Path:
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

    def entries(self) -> List[Dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # A line is written in one append; a partial last line cannot happen, but a
        # reader racing a writer is cheap to guard against.
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def counts(self) -> Counter[str]:
        return collections.Counter(e["id"] for e in self.entries())

    def missing(self, ids: Iterable[str]) -> List[str]:
        seen = self.counts()
        return [i for i in ids if i not in seen]

    def wait_for_ids(self, ids: Iterable[str], timeout: float = DEADLINE) -> List[Dict[str, Any]]:
        wanted = list(ids)
        wait_for(lambda: not self.missing(wanted), timeout=timeout,
                 what=lambda: f"the ledger to record all {len(wanted)} jobs; missing "
                              f"{self.missing(wanted)[:10]}")
        wanted_set = set(wanted)
        return [e for e in self.entries() if e["id"] in wanted_set]

    def entry(self, msg_id: str) -> Dict[str, Any]:
        return self.wait_for_ids([msg_id])[-1]


# -- RabbitMQ ---------------------------------------------------------------------------------


def _connect() -> pika.BlockingConnection:
    params = pika.URLParameters(BROKER_URL)
    params.heartbeat = 0  # the tests' connections idle while they wait on the daemon
    return pika.BlockingConnection(params)


def unique_queue(label: str) -> str:
    return f"e2e-{label}-{uuid.uuid4().hex[:12]}"


class Broker:
    """Publishing and queue counts for one test; deletes the queues it was given."""

    def __init__(self) -> None:
        self._conn = _connect()
        self._channel = self._conn.channel()
        self._channel.confirm_delivery()  # published means the broker has it
        self.queues: List[str] = []

    def declare(self, label: str) -> str:
        name = unique_queue(label)
        self.queues.append(name)
        self._channel.queue_declare(name, durable=True)
        return name

    def publish(self, queue: str, payload: Optional[Dict[str, Any]] = None,
                msg_id: Optional[str] = None, headers: Optional[Dict[str, Any]] = None) -> str:
        msg_id = msg_id or uuid.uuid4().hex
        self._channel.basic_publish(
            "", queue, json.dumps(payload or {}).encode(),
            pika.BasicProperties(message_id=msg_id, content_type="application/json",
                                 delivery_mode=2, headers=headers),
            mandatory=True)
        return msg_id

    def publish_many(self, queue: str, count: int, **payload: Any) -> List[str]:
        return [self.publish(queue, dict(payload)) for _ in range(count)]

    def counts(self, queue: str) -> "QueueCounts":
        ok = self._channel.queue_declare(queue, passive=True).method
        return QueueCounts(messages=ok.message_count, consumers=ok.consumer_count)

    def wait_consumers(self, queue: str, count: int) -> None:
        wait_for(lambda: self.counts(queue).consumers == count,
                 what=lambda: f"{count} consumers on {queue} (now {self.counts(queue)})")

    def close(self) -> None:
        try:
            for name in self.queues:
                self._channel.queue_delete(name)
        finally:
            self._conn.close()


@dataclass(frozen=True)
class QueueCounts:
    messages: int
    consumers: int


class ConsumerSampler:
    """Counts a queue's consumers over and over on its own connection, in a thread, while
    the test does something else (a reload). Use as a context manager."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="consumer-sampler", daemon=True)

    def _run(self) -> None:
        try:
            conn = _connect()
            try:
                channel = conn.channel()
                while not self._stop.is_set():
                    ok = channel.queue_declare(self.queue, passive=True).method
                    self.samples.append(ok.consumer_count)
                    self._stop.wait(0.005)  # a sampling rate, not a wait for a condition
            finally:
                conn.close()
        except BaseException as exc:  # reported by __exit__ in the test's thread
            self._error = exc

    def __enter__(self) -> "ConsumerSampler":
        self._thread.start()
        wait_for(lambda: self.samples or self._error, what="the first consumer count sample")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)
        if self._error is not None:
            raise self._error

    @property
    def minimum(self) -> int:
        return min(self.samples)


# -- qsupervisorctl -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CtlResult:
    args: List[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"qsupervisorctl {' '.join(self.args)} -> exit {self.returncode}\n"
                f"stdout: {self.stdout.strip()}\nstderr: {self.stderr.strip()}")


def run_ctl(target: List[str], *args: str, as_json: bool = True, timeout: float = 60.0,
            command: Optional[List[str]] = None, **popen: Any) -> CtlResult:
    """Run qsupervisorctl (or `command`, another way to start it) once."""
    argv = [*target, *(["--json"] if as_json else []), *args]
    proc = subprocess.run([*(command or [QSUPERVISORCTL]), *argv], capture_output=True,
                          text=True, timeout=timeout, **popen)
    return CtlResult(argv, proc.returncode, proc.stdout, proc.stderr)


# -- the daemon -------------------------------------------------------------------------------


class Daemon:
    """One qsupervisord under test. `teardown` always leaves no process of its tree."""

    def __init__(self, workdir: Path, daemon: Dict[str, Any], programs: Dict[str, Any]) -> None:
        self.workdir = workdir
        self.settings = daemon
        self.config_path = workdir / "queues.yaml"
        self.socket = Path(daemon["socket"])
        self.pidfile = Path(daemon["pidfile"])
        self.logfile = Path(daemon["logfile"])
        self.log_dir = Path(daemon["log_dir"])
        self.proc: Optional[subprocess.Popen] = None
        self.pgids: Set[int] = set()
        self.seen_pids: Set[int] = set()
        self.write(programs)

    def write(self, programs: Dict[str, Any]) -> None:
        write_config(self.config_path, self.settings, programs)

    # -- starting and stopping ------------------------------------------------------------

    def start(self, foreground: bool = True, wait: bool = True) -> None:
        out = open(self.workdir / "qsupervisord.out", "ab")
        argv = [QSUPERVISORD, "-c", str(self.config_path), *(["-n"] if foreground else [])]
        # Its own process group: the teardown can kill the whole tree, orphans included.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        if foreground:
            self.proc = proc
            self.pgids.add(proc.pid)
        else:
            code = proc.wait(DEADLINE)
            assert code == 0, f"qsupervisord -c exited {code}: {self.output()}"
            pid = wait_for(self.pidfile_pid, what=f"the pidfile {self.pidfile}")
            self.pgids.add(process_group(pid))
        if wait:
            self.wait_running()

    def pidfile_pid(self) -> Optional[int]:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

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
        for pgid in self.pgids:
            if pgid > 1 and pgid != os.getpgrp():
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self.seen_pids:
            # Only our own tree: a reused pid of some other process is left alone.
            if pid_alive(pid) and proc_title(pid).startswith("qsupervisord"):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)

    def is_up(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        pid = self.pidfile_pid()
        return pid is not None and pid_alive(pid)

    # -- talking to it -------------------------------------------------------------------------

    def ctl(self, *args: str, as_json: bool = True, timeout: float = 60.0) -> CtlResult:
        return run_ctl(["-c", str(self.config_path)], *args, as_json=as_json, timeout=timeout)

    def status(self, *names: str) -> Dict[str, Any]:
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

    def tree_pids(self) -> Set[int]:
        return tree_pids(self.status())

    def wait_running(self, *names: str) -> Dict[str, Any]:
        """Wait until every (named) program is RUNNING with all its workers RUNNING and
        none draining; return that status."""
        latest: Dict[str, Any] = {}

        def settled() -> bool:
            if not self.socket.exists():
                return False
            result = self.ctl("status", *names)
            if result.returncode == 4:
                return False
            latest.clear()
            latest.update(result.json() if result.returncode in (0, 3) else {})
            self.seen_pids.update(tree_pids(latest) if latest else set())
            return result.returncode == 0 and all(
                _program_settled(p) for p in latest.get("programs", {}).values())

        wait_for(settled, what=lambda: f"every worker RUNNING; status: {json.dumps(latest)}"
                                       f"\ndaemon output: {self.output()}")
        return dict(latest)

    def log_events(self) -> List[Dict[str, Any]]:
        events = []
        for line in self.logfile.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def program_log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


def _program_settled(program: Dict[str, Any]) -> bool:
    current = [w for w in program["workers"] if not w["draining"]]
    return (program["state"] == "RUNNING" and len(current) == program["desired"]
            and len(current) == len(program["workers"])
            and all(w["state"] == "RUNNING" and w["pid"] for w in current))


def tree_pids(status: Dict[str, Any]) -> Set[int]:
    """The master, every leader and every worker pid that a status reply names."""
    pids = {int(status["master"]["pid"])}
    for program in status.get("programs", {}).values():
        if program.get("leader_pid"):
            pids.add(int(program["leader_pid"]))
        pids.update(int(w["pid"]) for w in program["workers"]
                    if w["pid"] and w["state"] in ("STARTING", "RUNNING", "STOPPING"))
    return pids


def worker_pids(status: Dict[str, Any], name: str) -> Dict[int, int]:
    """slot -> pid of the program's current (not draining) workers."""
    return {w["slot"]: w["pid"] for w in status["programs"][name]["workers"]
            if not w["draining"]}


def busy_worker(status: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    """A worker of the program that is in the middle of a job, if any."""
    return next((w for w in status["programs"][name]["workers"]
                 if w["state"] == "RUNNING" and w["job"]), None)
