"""What a stopping worker does with the messages it holds but never started: it gives them
back without using up their delivery limit. A basic.nack where that is free (a classic
queue, RabbitMQ 4.3 and later), otherwise a confirmed copy and then an ack of the original
(RabbitMQ 3.x and 4.0-4.2 count every return on a quorum queue; see broker/returns.py).
Never a basic.reject, which counts on every version."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions

from qsupervisor.broker.delays import DelayChain
from qsupervisor.config.model import ProgramConfig
from qsupervisor.worker import jobs
from qsupervisor.worker.consumer import Consumer, Delivery, WorkerEvents


class FakeChannel:
    """Records the AMQP methods the consumer calls, on one log shared by its channels."""

    def __init__(self, calls: list[tuple[Any, ...]], refuse_publish: bool = False) -> None:
        self.calls = calls
        self.is_open = True
        self.consumer_tags = ["ctag"]
        self.refuse_publish = refuse_publish

    def basic_cancel(self, tag: str) -> None:
        self.calls.append(("cancel", tag))
        self.consumer_tags.remove(tag)

    def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.calls.append(("nack", tag, multiple, requeue))

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        self.calls.append(("reject", tag, requeue))

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.calls.append(("ack", tag))

    def basic_qos(self, prefetch_count: int) -> None:
        self.calls.append(("qos", prefetch_count))

    def basic_publish(self, exchange: str, routing_key: str, body: bytes,
                      properties: pika.BasicProperties, mandatory: bool = False) -> None:
        if self.refuse_publish:
            raise pika.exceptions.NackError([])
        self.calls.append(("publish", exchange, routing_key, body, dict(properties.headers)))


class QuietRunner:
    def held(self, count: int) -> None:
        pass


def _consumer(nack_is_free: bool, refuse_publish: bool = False, max_jobs: int = 0,
              prefetch: int = 10) -> tuple[Consumer, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    program = ProgramConfig(name="orders", handler="shop.jobs:work", queue="orders",
                            prefetch=prefetch)
    consumer = Consumer("amqp://guest:guest@127.0.0.1:5672/%2F", program,
                        DelayChain("orders.delay", "orders"), max_jobs=max_jobs,
                        runner=QuietRunner(),  # type: ignore[arg-type]
                        events=WorkerEvents(), name="test")
    consumer._channel = FakeChannel(calls)
    consumer._confirms = FakeChannel(calls, refuse_publish)
    consumer._consumer_tag = "ctag"
    consumer._nack_is_free = nack_is_free
    consumer._prefetch = consumer._prefetch_window()
    return consumer, calls


def _delivery(tag: int, count: int = 0) -> Delivery:
    headers = {"x-qsupervisor-attempt": 1, "x-delivery-count": count}
    properties = pika.BasicProperties(message_id=f"m{tag}", headers=headers)
    return Delivery(0, tag, properties, f"body {tag}".encode(), False)


def _hold(consumer: Consumer, *tags: int) -> None:
    for tag in tags:
        consumer._pending.append(_delivery(tag, count=3))


def test_where_a_nack_is_free_a_stop_cancels_then_nacks_each_prefetched_message() -> None:
    consumer, calls = _consumer(nack_is_free=True)
    _hold(consumer, 7, 8, 9)
    consumer.request_stop("stop")  # no connection: the I/O thread's part is called below
    consumer._begin_stop()
    assert calls == [("cancel", "ctag"), ("nack", 7, False, True),
                     ("nack", 8, False, True), ("nack", 9, False, True)]
    assert not consumer._pending


def test_where_a_nack_counts_each_prefetched_message_goes_back_as_a_copy_then_is_acked() -> None:
    consumer, calls = _consumer(nack_is_free=False)
    _hold(consumer, 7, 8)
    consumer.request_stop("stop")
    consumer._begin_stop()
    # The copy keeps body and headers but the broker's count, and is confirmed before
    # the original is acked.
    copy_headers = {"x-qsupervisor-attempt": 1}
    assert calls == [("cancel", "ctag"),
                     ("publish", "", "orders", b"body 7", copy_headers), ("ack", 7),
                     ("publish", "", "orders", b"body 8", copy_headers), ("ack", 8)]
    assert not any(call[0] in ("nack", "reject") for call in calls)


def test_a_copy_the_broker_refuses_falls_back_to_a_nack_so_the_message_stays() -> None:
    consumer, calls = _consumer(nack_is_free=False, refuse_publish=True)
    _hold(consumer, 7)
    consumer.request_stop("stop")
    consumer._begin_stop()
    assert calls == [("cancel", "ctag"), ("nack", 7, False, True)]


def test_a_delivery_that_arrives_while_stopping_is_given_back_once_the_consumer_is_cancelled(
) -> None:
    # Not from inside the delivery's dispatch: the consumer is still active there, so a
    # copy published then would be delivered straight back to it, and copied again.
    consumer, calls = _consumer(nack_is_free=False)
    consumer.request_stop("stop")

    class Method:
        delivery_tag = 12
        redelivered = False

    delivery = _delivery(12)
    consumer._on_message(consumer._channel, Method(), delivery.properties, delivery.body)
    assert calls == [] and len(consumer._pending) == 1
    assert not consumer._finished()  # the worker does not leave holding it
    consumer._begin_stop()  # what the I/O loop runs next
    assert calls == [("cancel", "ctag"),
                     ("publish", "", "orders", b"body 12", {"x-qsupervisor-attempt": 1}),
                     ("ack", 12)]
    assert not consumer._pending and consumer._finished()


def test_a_worker_that_stops_cancels_its_consumer_before_acking_its_last_job() -> None:
    # The ack frees a prefetch slot; cancelled first, the broker cannot fill it with a
    # message that would have to be given back.
    consumer, calls = _consumer(nack_is_free=True)
    consumer._results.append((_delivery(5), jobs.Outcome(jobs.ACK, "m5")))
    consumer._stop_reason = "max_jobs"
    consumer._settle_results()
    assert calls == [("cancel", "ctag"), ("ack", 5)]


def test_the_prefetch_window_never_exceeds_the_jobs_left_before_max_jobs() -> None:
    consumer, calls = _consumer(nack_is_free=True, max_jobs=4, prefetch=10)
    assert consumer._prefetch_window() == 4
    consumer._jobs_started = 2
    consumer._settle_results()
    assert calls == [("qos", 2)]
    consumer._jobs_started = 3
    consumer._settle_results()
    assert calls == [("qos", 2), ("qos", 1)]
    consumer._settle_results()  # no lower than it is: no qos round trip
    assert calls == [("qos", 2), ("qos", 1)]


def test_without_max_jobs_the_prefetch_window_is_the_programs() -> None:
    consumer, calls = _consumer(nack_is_free=True, max_jobs=0, prefetch=10)
    consumer._jobs_started = 1000
    consumer._settle_results()
    assert consumer._prefetch_window() == 10 and calls == []
