"""What a stopping worker sends for the messages it holds but never started: a basic.nack
with requeue, one per message, never a basic.reject (from RabbitMQ 4.3 a reject counts as a
failed delivery attempt towards a quorum queue's delivery limit, a nack does not)."""

from __future__ import annotations

from typing import Any, List, Tuple

from qsupervisor.broker.delays import DelayChain
from qsupervisor.config.model import ProgramConfig
from qsupervisor.worker.consumer import Consumer, Delivery, WorkerEvents


class FakeChannel:
    """Records the AMQP methods the consumer calls."""

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []
        self.is_open = True
        self.consumer_tags = ["ctag"]

    def basic_cancel(self, tag: str) -> None:
        self.calls.append(("cancel", tag))
        self.consumer_tags.remove(tag)

    def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.calls.append(("nack", tag, multiple, requeue))

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        self.calls.append(("reject", tag, requeue))


class QuietRunner:
    def held(self, count: int) -> None:
        pass


def _consumer(channel: FakeChannel) -> Consumer:
    program = ProgramConfig(name="orders", handler="shop.jobs:work", queue="orders")
    consumer = Consumer("amqp://guest:guest@127.0.0.1:5672/%2F", program,
                        DelayChain("orders.delay", "orders"), max_jobs=0,
                        runner=QuietRunner(),  # type: ignore[arg-type]
                        events=WorkerEvents(), name="test")
    consumer._channel = channel
    consumer._consumer_tag = "ctag"
    return consumer


def test_a_stop_cancels_then_nacks_each_prefetched_message_with_requeue() -> None:
    channel = FakeChannel()
    consumer = _consumer(channel)
    for tag in (7, 8, 9):
        consumer._pending.append(Delivery(0, tag, None, b"{}", False))
    consumer.request_stop("stop")  # no connection: the I/O thread's part is called below
    consumer._begin_stop()
    assert channel.calls == [("cancel", "ctag"), ("nack", 7, False, True),
                             ("nack", 8, False, True), ("nack", 9, False, True)]
    assert not consumer._pending


def test_a_delivery_that_arrives_while_stopping_is_nacked_back() -> None:
    channel = FakeChannel()
    consumer = _consumer(channel)
    consumer.request_stop("stop")

    class Method:
        delivery_tag = 12
        redelivered = False

    consumer._on_message(channel, Method(), None, b"{}")
    assert channel.calls == [("nack", 12, False, True)]
    assert not consumer._pending
