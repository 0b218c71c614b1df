"""Fixtures of the end-to-end suite: a broker connection that deletes the test's queues, a
ledger file, and a factory of daemons that are always torn down, tree and all.

Teardown order matters: `daemons` depends on `broker`, so every daemon is gone before the
queues are deleted (a worker that saw its queue vanish would reconnect and declare it
again, leaking it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemon import Daemon, MakeDaemon, teardown_all
from .harness import APPS_DIR, Ledger, daemon_section
from .rabbit import Broker

# Every checkout on this machine tests against the same RabbitMQ.
BROKER_LOCK = Path(tempfile.gettempdir()) / "qsupervisor-e2e-broker.lock"


@pytest.fixture(autouse=True)
def broker_lock() -> Iterator[None]:
    """Each end-to-end test holds this lock shared. No test of this tree restarts the
    machine's RabbitMQ any more (the broker outages run in tests/faults, on nodes of their
    own), but a checkout of an older tree takes the lock exclusively for its broker-restart
    tests: holding it keeps such a restart from pulling the broker from under ours.
    (Autouse: it is taken before the test's other fixtures and released after them.)"""
    fd = os.open(BROKER_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture
def broker() -> Iterator[Broker]:
    connection = Broker()
    yield connection
    connection.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    """Modules a test writes (and edits) at run time; on the daemon's `path:`."""
    path = tmp_path / "code"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def daemons(tmp_path: Path, broker: Broker, code_dir: Path) -> Iterator[MakeDaemon]:
    """`daemons(programs, **qsupervisord_settings)` writes a configuration in a directory of
    its own under tmp_path and returns a Daemon (not started)."""
    made: list[Daemon] = []

    def make(programs: dict[str, Any], workdir: Path | None = None,
             **settings: Any) -> Daemon:
        directory = workdir or tmp_path / f"daemon{len(made)}"
        directory.mkdir(parents=True, exist_ok=True)
        settings.setdefault("path", [str(APPS_DIR), str(code_dir)])
        daemon = Daemon(directory, daemon_section(directory, **settings), programs)
        made.append(daemon)
        return daemon

    yield make
    teardown_all(made)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to root), for a
    control socket that another uid must reach."""
    path = Path(tempfile.mkdtemp(prefix="qsv-e2e-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
