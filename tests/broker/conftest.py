"""Fixtures of the broker suite: a connection to the real RabbitMQ, unique names, and a
registry of everything a test declares, deleted when the test ends (even if it fails).

Names carry a uuid suffix so tests running at the same time (or a leftover from a killed
run) never see each other's messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Callable

import pika
import pytest
from brokerkit import BROKER_URL, Cleanup, MakeProgram

from qsupervisor.broker.topology import Topology
from qsupervisor.config.model import DelayConfig, ProgramConfig


@pytest.fixture
def broker_url() -> str:
    return BROKER_URL


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    registry = Cleanup()
    yield registry
    registry.delete_all()


@pytest.fixture
def connection() -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    yield conn
    if conn.is_open:
        conn.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """unique("orders") -> "qsv-test-orders-1a2b3c4d"."""
    return lambda base: f"qsv-test-{base}-{uuid.uuid4().hex[:8]}"


DEFAULT_DELAY = DelayConfig()  # frozen: one instance serves every call


@pytest.fixture
def make_program(unique: Callable[[str], str], cleanup: Cleanup) -> MakeProgram:
    """A ProgramConfig with a unique queue; its whole topology is deleted after the test."""

    def make(queue_type: str = "quorum", fmt: str = "json", delay: DelayConfig = DEFAULT_DELAY
             ) -> ProgramConfig:
        queue = unique("q")
        program = ProgramConfig(name=queue, handler="app:handle", queue=queue,
                                delay_exchange=f"{queue}.delay",
                                dead_letter_queue=f"{queue}.failed",
                                queue_type=queue_type, format=fmt)
        cleanup.topology(Topology.for_program(program, delay))
        return program

    return make
