"""Helpers shared by the broker tests (a module of its own, not conftest: several test
directories have a conftest.py, and `from conftest import` would pick whichever came first).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import pika
import pika.exceptions

from qsupervisor.broker.declarations import ExchangeDecl, QueueDecl
from qsupervisor.broker.topology import Topology
from qsupervisor.config.model import ProgramConfig

BROKER_URL = os.environ.get("QSUPERVISOR_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")
MakeProgram = Callable[..., ProgramConfig]


class Cleanup:
    """Queues and exchanges to delete at the end of a test."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def topology(self, topology: Topology) -> Topology:
        for decl in topology.declarations():
            if isinstance(decl, QueueDecl):
                self.queues.append(decl.name)
            elif isinstance(decl, ExchangeDecl):
                self.exchanges.append(decl.name)
        return topology

    def delete_all(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        channel = connection.channel()
        try:
            for kind, name in [("queue", q) for q in self.queues] + [
                    ("exchange", x) for x in self.exchanges]:
                if not channel.is_open:  # a refused delete closes the channel
                    channel = connection.channel()
                _delete(channel, kind, name)
        finally:
            connection.close()


def _delete(channel: Any, kind: str, name: str) -> None:
    try:
        if kind == "queue":
            channel.queue_delete(name)
        else:
            channel.exchange_delete(name)
    except pika.exceptions.ChannelClosedByBroker:  # e.g. already gone on an old broker
        pass
