"""RabbitMQ for the end-to-end tests: publishing, queue counts, and a consumer-count
sampler that runs beside a reload."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import pika

from qsupervisor.broker.delays import DelayChain

from .harness import BROKER_URL, DEADLINE, wait_for


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
        self._open_channel()
        self.queues: List[str] = []

    def _open_channel(self) -> None:
        self._channel = self._conn.channel()
        self._channel.confirm_delivery()  # published means the broker has it

    @property
    def channel(self) -> Any:
        """The channel, reopened if the broker closed it (a failed passive declare does)."""
        if not self._channel.is_open:
            self._open_channel()
        return self._channel

    def declare(self, label: str) -> str:
        """A fresh queue, declared as the daemon will (quorum, the default queue_type), so a
        test can publish before the daemon runs."""
        name = unique_queue(label)
        self.queues.append(name)
        self.channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        return name

    def publish(self, queue: str, payload: Optional[Dict[str, Any]] = None,
                msg_id: Optional[str] = None, headers: Optional[Dict[str, Any]] = None) -> str:
        msg_id = msg_id or uuid.uuid4().hex
        self.channel.basic_publish(
            "", queue, json.dumps(payload or {}).encode(),
            pika.BasicProperties(message_id=msg_id, content_type="application/json",
                                 delivery_mode=2, headers=headers),
            mandatory=True)
        return msg_id

    def publish_many(self, queue: str, count: int, **payload: Any) -> List[str]:
        return [self.publish(queue, dict(payload)) for _ in range(count)]

    def counts(self, queue: str) -> "QueueCounts":
        ok = self.channel.queue_declare(queue, passive=True).method
        return QueueCounts(messages=ok.message_count, consumers=ok.consumer_count)

    def wait_consumers(self, queue: str, count: int) -> None:
        wait_for(lambda: self.counts(queue).consumers == count,
                 what=lambda: f"{count} consumers on {queue} (now {self.counts(queue)})")

    def close(self) -> None:
        """Delete the test's queues and what the daemon declared for them: the dead-letter
        queue and the delay chain."""
        try:
            for name in self.queues:
                self.channel.queue_delete(name)
                self.channel.queue_delete(f"{name}.failed")
                chain = DelayChain(f"{name}.delay", name)
                for k in range(chain.levels):
                    self.channel.queue_delete(chain.level_queue(k))
                    self.channel.exchange_delete(chain.level_exchange(k))
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
