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
from typing import Any, Callable

import pytest

from .daemon import Daemon, MakeDaemon
from .harness import APPS_DIR, Ledger, daemon_section
from .rabbit import Broker, start_broker_app, stop_broker_app

BROKER_RESTART = "broker_restart"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{BROKER_RESTART}: restarts the RabbitMQ application; runs after the "
                   "other end-to-end tests, so a slow recovery cannot disturb them")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the broker go last (a stable sort keeps the order of the rest)."""
    items.sort(key=lambda item: item.get_closest_marker(BROKER_RESTART) is not None)


# Every checkout on this machine tests against the same RabbitMQ.
BROKER_LOCK = Path(tempfile.gettempdir()) / "qsupervisor-e2e-broker.lock"


@pytest.fixture(autouse=True)
def broker_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that restarts the broker holds this lock exclusively, every other end-to-end
    test holds it shared: a restart never pulls the broker from under another test, in
    this run or in a concurrent one from another checkout. (Autouse: it is taken before
    the test's other fixtures and released after them.)"""
    exclusive = request.node.get_closest_marker(BROKER_RESTART) is not None
    fd = os.open(BROKER_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture
def broker() -> Iterator[Broker]:
    connection = Broker()
    yield connection
    connection.close()


@pytest.fixture
def restart_broker(broker: Broker) -> Iterator[Callable[[], None]]:
    """`restart_broker()` stops and starts the RabbitMQ application and reconnects the
    test's `broker`. Whatever happens in the test, the broker is running at its end."""

    interrupted: list[bool] = []

    def restart() -> None:
        interrupted.append(True)
        stop_broker_app()
        start_broker_app()
        broker.reconnect()
        interrupted.pop()

    try:
        yield restart
    finally:
        start_broker_app()
        if interrupted:  # the test failed half-way: the queues must still be deleted
            broker.reconnect()


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
    failures: list[BaseException] = []
    for daemon in reversed(made):
        try:
            daemon.teardown()
        except Exception as exc:  # tear down the others all the same
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to root), for a
    control socket that another uid must reach."""
    path = Path(tempfile.mkdtemp(prefix="qsv-e2e-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
