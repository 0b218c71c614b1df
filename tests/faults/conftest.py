"""Fixtures of the fault suite: RabbitMQ nodes of its own (one single node, and a 3-node
cluster started only if a scenario asks for it), each booted once per session and stopped
at its end whatever happened; per test, a broker client on a node, a ledger, and a factory
of daemons that are always torn down, tree and all.

The machine's RabbitMQ on port 5672 is never touched: every daemon here is pointed at one
of the suite's nodes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.daemon import Daemon, teardown_all
from e2e.harness import daemon_section

from .nodes import RabbitNode, form_cluster, make_home, start_nodes
from .support import APPS_DIR, FIGURES_LINES, FaultLedger, MakeDaemon, NodeBroker


class Nodes:
    """The session's nodes: created on first use, all stopped at the end (or at exit)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qsv-faults-"))
        self.home = make_home(self.root)
        self.started: list[RabbitNode] = []
        self._label = f"qsvfaults{os.getpid()}"
        atexit.register(self.stop_all)  # also if the session is interrupted

    def node(self, name: str) -> RabbitNode:
        return RabbitNode(f"{self._label}-{name}", self.home, self.root / name)

    def start(self, nodes: list[RabbitNode]) -> None:
        self.started.extend(nodes)  # before booting: a half-started node is stopped too
        start_nodes(nodes)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def nodes() -> Iterator[Nodes]:
    made = Nodes()
    yield made
    made.stop_all()


@pytest.fixture(scope="session")
def single_node(nodes: Nodes) -> RabbitNode:
    """A lone node the scenarios may stop, kill and restart (each leaves it running)."""
    node = nodes.node("single")
    nodes.start([node])
    return node


@pytest.fixture(scope="session")
def cluster(nodes: Nodes) -> list[RabbitNode]:
    """Three nodes of one cluster, for quorum queues that outlive a node."""
    members = [nodes.node(f"cluster{k}") for k in range(3)]
    nodes.start(members)
    form_cluster(members)
    return members


@pytest.fixture
def up_single_node(single_node: RabbitNode) -> Iterator[RabbitNode]:
    """The single node, running again at the end of the test whatever the test did to it."""
    yield single_node
    ensure_running(single_node)


def ensure_running(node: RabbitNode) -> None:
    """Bring a node back after a scenario that failed half-way through an outage."""
    if node.vm_pid() is None:
        node.start()
        return
    try:
        node.ctl("-q", "await_startup", timeout=5)
    except Exception:  # the app is stopped (or the VM is wedged): start it again
        node.start_app()


@pytest.fixture
def broker(single_node: RabbitNode) -> Iterator[NodeBroker]:
    client = NodeBroker(single_node.url)
    yield client
    client.close()


@pytest.fixture
def ledger(tmp_path: Path) -> FaultLedger:
    return FaultLedger(tmp_path / "ledger.jsonl")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[MakeDaemon]:
    """`daemons(programs, broker=URL, **qsupervisord_settings)` writes a configuration in a
    directory of its own and returns a Daemon (not started). `broker` is required: a
    fault scenario never runs against the machine's RabbitMQ."""
    made: list[Daemon] = []

    def make(programs: dict[str, Any], *, broker: Any, **settings: Any) -> Daemon:
        directory = tmp_path / f"daemon{len(made)}"
        directory.mkdir(parents=True, exist_ok=True)
        settings.setdefault("path", [str(APPS_DIR)])
        daemon = Daemon(directory, daemon_section(directory, broker=broker, **settings),
                        programs)
        made.append(daemon)
        return daemon

    yield make
    teardown_all(made)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Every scenario's figures together at the end, with or without -s."""
    if FIGURES_LINES:
        terminalreporter.section("fault figures")
        for line in FIGURES_LINES:
            terminalreporter.write_line(line)
