"""RabbitMQ for the end-to-end tests: publishing, queue counts, and a consumer-count
sampler that runs beside a reload."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

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
        self.queues: list[str] = []

    def _open_channel(self) -> None:
        self._channel = self._conn.channel()
        self._channel.confirm_delivery()  # published means the broker has it

    @property
    def channel(self) -> Any:
        """The channel, reopened if the broker closed it (a failed passive declare does)."""
        if not self._channel.is_open:
            self._open_channel()
        return self._channel

    def reconnect(self) -> None:
        """A new connection, after the broker closed ours (a broker restart)."""
        try:
            if self._conn.is_open:
                self._conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass  # it is dead already
        self._conn = _connect()
        self._open_channel()

    def name(self, label: str) -> str:
        """A fresh queue name the daemon will declare itself; deleted with the test's
        queues (and its dead-letter queue and delay chain) like a declared one."""
        name = unique_queue(label)
        self.queues.append(name)
        return name

    def declare(self, label: str, queue_type: str = "quorum") -> str:
        """A fresh queue, declared as the daemon will (quorum, the default queue_type), so a
        test can publish before the daemon runs."""
        name = unique_queue(label)
        self.queues.append(name)
        self.channel.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
        return name

    def publish(self, queue: str, payload: dict[str, Any] | None = None,
                msg_id: str | None = None, headers: dict[str, Any] | None = None) -> str:
        msg_id = msg_id or uuid.uuid4().hex
        self.channel.basic_publish(
            "", queue, json.dumps(payload or {}).encode(),
            pika.BasicProperties(message_id=msg_id, content_type="application/json",
                                 delivery_mode=2, headers=headers),
            mandatory=True)
        return msg_id

    def publish_many(self, queue: str, count: int, **payload: Any) -> list[str]:
        return [self.publish(queue, dict(payload)) for _ in range(count)]

    def publish_batch(self, queue: str, payloads: Iterable[dict[str, Any]],
                      batch: int = 500) -> list[str]:
        return publish_in_transactions(self._conn, queue, payloads, batch)

    def publish_raw(self, queue: str, body: bytes, msg_id: str | None = None,
                    content_type: str | None = None) -> str:
        """Publish `body` as it is (no JSON encoding), confirmed."""
        msg_id = msg_id or uuid.uuid4().hex
        self.channel.basic_publish(
            "", queue, body,
            pika.BasicProperties(message_id=msg_id, content_type=content_type, delivery_mode=2),
            mandatory=True)
        return msg_id

    def peek(self, queue: str, limit: int = 100) -> list[tuple[Any, bytes]]:
        """(properties, body) of up to `limit` messages at the head of `queue`, left in it:
        read unacknowledged on a channel of their own, handed back by closing it."""
        channel = self._conn.channel()
        found: list[tuple[Any, bytes]] = []
        try:
            while len(found) < limit:
                method, properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                found.append((properties, body))
        finally:
            channel.close()
        return found

    def counts(self, queue: str) -> QueueCounts:
        ok = self.channel.queue_declare(queue, passive=True).method
        return QueueCounts(messages=ok.message_count, consumers=ok.consumer_count)

    def exists(self, queue: str) -> bool:
        try:
            self.counts(queue)
            return True
        except pika.exceptions.ChannelClosedByBroker:  # 404; the channel reopens on next use
            return False

    def wait_consumers(self, queue: str, count: int) -> None:
        wait_for(lambda: self.counts(queue).consumers == count,
                 what=lambda: f"{count} consumers on {queue} (now {self.counts(queue)})")

    def close(self) -> None:
        """Delete the test's queues and what the daemon declared for them: the dead-letter
        queue and the delay chain."""
        try:
            delete_program_queues(self.channel, self.queues)
        finally:
            self._conn.close()


def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"rabbitmqctl {' '.join(args)} -> exit {proc.returncode}: "
                                  f"{proc.stdout} {proc.stderr}")
    return proc.stdout


# RabbitMQ 4's default delivery limit on quorum queues. The delivery-limit tests set it by
# policy on every version, so that what they prove on 4.x is proven on 3.x (no default
# limit) too.
DEFAULT_DELIVERY_LIMIT = 20


@contextlib.contextmanager
def delivery_limit(*queues: str, limit: int = DEFAULT_DELIVERY_LIMIT) -> Iterator[None]:
    """A policy giving `queues` a delivery limit (and no dead-letter target: a message past
    the limit is dropped, as on RabbitMQ 4 by default), in force once this is entered."""
    name = f"qsv-e2e-limit-{uuid.uuid4().hex[:12]}"
    pattern = "^(" + "|".join(re.escape(queue) for queue in queues) + ")$"
    rabbitmqctl("set_policy", "--apply-to", "queues", name, pattern,
                json.dumps({"delivery-limit": limit}))
    try:
        wait_for(lambda: _policy_of(queues) == {name}, what=f"policy {name} on {queues}")
        yield
    finally:
        rabbitmqctl("clear_policy", name)


def _policy_of(queues: Iterable[str]) -> set:
    """The policies in force on `queues` (one entry, "", for a queue without); empty while
    one of them does not exist."""
    wanted = set(queues)
    listing = json.loads(rabbitmqctl("-q", "list_queues", "name", "policy",
                                     "--formatter", "json") or "[]")
    found = {q["name"]: q.get("policy") or "" for q in listing if q.get("name") in wanted}
    return set(found.values()) if len(found) == len(wanted) else set()


def connection_heartbeats() -> dict[str, int]:
    """connection name -> heartbeat timeout (seconds) the broker negotiated with it."""
    proc = subprocess.run(["rabbitmqctl", "-q", "list_connections", "client_properties",
                           "timeout", "--formatter", "json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = {}
    for connection in json.loads(proc.stdout or "[]"):
        # A connection still opening (or closing) has no properties list yet.
        properties = connection.get("client_properties")
        entries = properties if isinstance(properties, list) else []
        name = next((entry[2] for entry in entries
                     if isinstance(entry, list) and len(entry) == 3
                     and entry[0] == "connection_name"), None)
        if name is not None:
            found[name] = int(connection["timeout"])
    return found


@dataclass(frozen=True)
class QueueCounts:
    messages: int
    consumers: int


class ConsumerSampler:
    """Counts a queue's consumers over and over on its own connection, in a thread, while
    the test does something else (a reload). Use as a context manager."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
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

    def __enter__(self) -> ConsumerSampler:
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


def publish_in_transactions(conn: pika.BlockingConnection, queue: str,
                            payloads: Iterable[dict[str, Any]], batch: int = 500) -> list[str]:
    """Publish fast: in transactions of `batch` messages, each committed (the broker has
    them all) before the next begins; a message returned unroutable fails. The message ids,
    in order."""
    returned: list[str] = []
    channel = conn.channel()
    channel.add_on_return_callback(
        lambda _ch, _method, props, _body: returned.append(props.message_id))
    channel.tx_select()
    ids: list[str] = []
    try:
        for payload in payloads:
            msg_id = uuid.uuid4().hex
            channel.basic_publish(
                "", queue, json.dumps(payload).encode(),
                pika.BasicProperties(message_id=msg_id, content_type="application/json",
                                     delivery_mode=2), mandatory=True)
            ids.append(msg_id)
            if len(ids) % batch == 0:
                channel.tx_commit()
        channel.tx_commit()
    finally:
        channel.close()
    assert not returned, f"{len(returned)} messages returned unroutable by {queue}"
    return ids


def delete_program_queues(channel: Any, queues: Iterable[str]) -> None:
    """Delete each queue and what a daemon declared for it: its dead-letter queue and its
    delay chain (default names)."""
    for name in queues:
        channel.queue_delete(name)
        channel.queue_delete(f"{name}.failed")
        chain = DelayChain(f"{name}.delay", name)
        for k in range(chain.levels):
            channel.queue_delete(chain.level_queue(k))
            channel.exchange_delete(chain.level_exchange(k))
