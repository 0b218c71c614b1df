"""The RabbitMQ side of a worker: pika's I/O on one thread, the handler on another.

pika's BlockingConnection only answers heartbeats while its owner thread is inside pika,
so the handler must not run on that thread: a job longer than two heartbeat intervals
would get the connection closed under it and the message executed twice. The I/O thread
hands deliveries to the job thread through `_pending`; outcomes come back through
`add_callback_threadsafe`, the one pika call that is safe from another thread.
"""

from __future__ import annotations

import collections
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Deque, Optional, Tuple

import pika
import pika.exceptions

from qsupervisor import logs
from qsupervisor.broker import connection, publisher
from qsupervisor.broker.delays import DelayChain
from qsupervisor.config import ProgramConfig
from qsupervisor.worker import jobs
from qsupervisor.worker.jobs import JobRunner, Outcome

log = logs.get("qsupervisor.worker")

# Reconnect backoff: a broker restart should not turn into a thundering herd of workers.
RECONNECT_INITIAL = 0.5
RECONNECT_MAX = 30.0
# pika does not raise when the broker closes just the channel (consumer_timeout, a deleted
# queue): the I/O loop wakes this often to notice, and reconnects.
LIVENESS_CHECK = 5.0
PUBLISH_FAILURE_PAUSE = 1.0  # seconds before a message whose retry could not be published returns


class ChannelLost(pika.exceptions.AMQPError):
    """The broker closed our consuming channel or cancelled our consumer."""


@dataclass
class Delivery:
    generation: int  # which connection it came on; acks for an older one are moot
    tag: int
    properties: Any
    body: bytes
    redelivered: bool


class WorkerEvents:
    """What the consumer tells the rest of the worker (and through it, the master)."""

    def ready(self) -> None: ...
    def broker_lost(self, error: str) -> None: ...
    def broker_back(self) -> None: ...


class Consumer:
    def __init__(self, broker: str, program: ProgramConfig, chain: DelayChain, max_jobs: int,
                 runner: JobRunner, events: WorkerEvents, name: str,
                 after_job: Callable[[], Optional[str]] = lambda: None) -> None:
        self._params = connection.parameters(broker, name=name)
        self._program = program
        self._chain = chain
        self._max_jobs = max_jobs
        self._runner = runner
        self._events = events
        self._after_job = after_job  # a reason to recycle (max_memory), or None
        # Guards everything the threads share: the hand-off queues, the connection handle
        # and the stop reason.
        self._lock = threading.Condition()
        self._pending: Deque[Delivery] = collections.deque()
        self._results: Deque[Tuple[Delivery, Outcome]] = collections.deque()
        self._in_flight: Optional[Delivery] = None
        self._abandoned: Optional[Delivery] = None
        self._stop_reason: Optional[str] = None
        self._stop_event = threading.Event()
        self.abandon_done = threading.Event()
        self.abandon_settled = False  # the timed-out job's message was retried/dead-lettered
        self._cancelled_by_broker = False
        self._conn: Optional[pika.BlockingConnection] = None
        self._channel: Any = None
        self._confirms: Any = None  # a channel in confirm mode, for retries and dead letters
        self._consumer_tag = ""
        self._generation = 0
        self._jobs_started = 0
        self._announced = False

    # -- called from other threads ---------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop consuming, hand back what has not started, finish the job in hand."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            conn = self._conn
            self._lock.notify_all()
        self._stop_event.set()
        _call_soon(conn, self._begin_stop)

    def abandon_job(self, reason: str, error: str) -> bool:
        """Give up on the job in hand (it ran past `timeout`): its message is retried or
        dead-lettered as a failed attempt from the I/O thread, which the stuck handler
        does not block. Returns False if that could not be arranged."""
        with self._lock:
            delivery, conn = self._in_flight, self._conn
            if delivery is None or conn is None or delivery.generation != self._generation:
                return False
            self._abandoned = delivery
            self._stop_reason = self._stop_reason or reason
        _call_soon(conn, lambda: self._settle_abandoned(delivery, reason, error))
        return True

    @property
    def stop_reason(self) -> Optional[str]:
        return self._stop_reason

    # -- I/O thread --------------------------------------------------------------------

    def run(self) -> str:
        """Consume until asked to stop; returns the reason. Runs on the I/O thread."""
        job_thread = threading.Thread(target=self._job_loop, name="job", daemon=True)
        job_thread.start()
        failures = 0
        while self._stop_reason is None:
            try:
                self._consume()
                failures = 0
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._connection_lost(exc)
                failures += 1
                delay = min(RECONNECT_MAX, RECONNECT_INITIAL * 2 ** (failures - 1))
                self._stop_event.wait(delay * random.uniform(0.5, 1.0))
        if self._abandoned is None:
            # A job still running on a dead connection finishes before we leave; the
            # broker redelivers it because its ack had nowhere to go.
            job_thread.join()
        return self._stop_reason or "stop"

    def _consume(self) -> None:
        conn = pika.BlockingConnection(self._params)
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=self._program.prefetch)
            confirms = conn.channel()
            confirms.confirm_delivery()
            with self._lock:
                self._generation += 1
                self._results.clear()  # outcomes of the previous connection cannot be acked
                self._conn, self._channel, self._confirms = conn, channel, confirms
            self._cancelled_by_broker = False
            channel.add_on_cancel_callback(self._on_broker_cancel)
            self._consumer_tag = channel.basic_consume(self._program.queue, self._on_message)
            if self._stop_reason is not None:
                self._begin_stop()
            elif not self._announced:
                self._announced = True
                self._events.ready()
            else:
                log.info("reconnected to the broker", queue=self._program.queue)
                self._events.broker_back()
            while not self._finished():
                conn.process_data_events(time_limit=LIVENESS_CHECK)
                if not channel.is_open or self._cancelled_by_broker:
                    raise ChannelLost(f"the broker closed the channel consuming "
                                      f"'{self._program.queue}' or cancelled its consumer")
        finally:
            with self._lock:
                self._conn = self._channel = self._confirms = None
            if conn.is_open:
                try:
                    conn.close()
                except (pika.exceptions.AMQPError, OSError):
                    pass

    def _on_broker_cancel(self, _frame: Any) -> None:
        self._cancelled_by_broker = True

    def _finished(self) -> bool:
        with self._lock:
            if self._abandoned is not None:
                return self.abandon_done.is_set()
            return (self._stop_reason is not None and self._in_flight is None
                    and not self._results)

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        delivery = Delivery(self._generation, method.delivery_tag, properties, body,
                            bool(method.redelivered))
        with self._lock:
            if self._stop_reason is None:
                self._pending.append(delivery)
                self._lock.notify_all()
                self._runner.held(len(self._pending) + (self._in_flight is not None))
                return
        _hand_back(channel, delivery.tag)  # arrived while we cancel

    def _begin_stop(self) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        with self._lock:
            handed_back, self._pending = list(self._pending), collections.deque()
            self._runner.held(self._in_flight is not None)
        try:
            if self._consumer_tag in channel.consumer_tags:
                channel.basic_cancel(self._consumer_tag)
            for delivery in handed_back:
                _hand_back(channel, delivery.tag)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not hand back prefetched messages; the broker will "
                        "redeliver them", error=repr(exc))

    def _connection_lost(self, exc: BaseException) -> None:
        # Unacked deliveries, started or not, return to the queue when the channel dies;
        # drop our copies so that nothing runs twice on our side.
        with self._lock:
            self._pending.clear()
            self._runner.held(self._in_flight is not None)
        if self._stop_reason is None:
            log.warning("broker connection lost; reconnecting", queue=self._program.queue,
                        error=repr(exc))
            self._events.broker_lost(repr(exc))

    def _settle_results(self) -> None:
        """Carry out finished jobs' outcomes; runs on the I/O thread."""
        with self._lock:
            results, self._results = list(self._results), collections.deque()
            generation, channel = self._generation, self._channel
        for delivery, outcome in results:
            if delivery.generation != generation or channel is None or not channel.is_open:
                continue  # its channel is gone: the broker redelivers it
            self._settle(channel, delivery, outcome)
        if self._stop_reason is not None:
            self._begin_stop()

    def _settle(self, channel: Any, delivery: Delivery, outcome: Outcome) -> bool:
        """Publish what the outcome asks for, confirmed, then ack the original; if the
        publish fails the original goes back to the queue: never both lost. True once
        the original is acked."""
        try:
            if outcome.kind == jobs.ACK:
                _ack_unflushed(channel, delivery.tag)
                return True
            try:
                self._publish(outcome)
            except publisher.PublishError as exc:
                log.error("could not publish the retry or dead letter; returning the message "
                          "to the queue in a moment", message_id=outcome.message_id,
                          error=str(exc))
                self._reopen_confirms()
                # Not at once: a broken topology would otherwise spin the message through
                # the handler as fast as the broker can redeliver it.
                self._conn_call_later(PUBLISH_FAILURE_PAUSE,
                                      lambda: self._nack(channel, delivery))
                return False
            channel.basic_ack(delivery.tag)
            return True
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not settle the message; the broker will redeliver it",
                        message_id=outcome.message_id, error=repr(exc))
            return False

    def _publish(self, outcome: Outcome) -> None:
        if outcome.kind in (jobs.RETRY, jobs.REDELAY):
            publisher.publish_delayed(self._confirms, self._chain, outcome.body,
                                      outcome.properties, outcome.delay)
        elif outcome.kind == jobs.DEAD:
            publisher.publish_to_queue(self._confirms, self._program.dead_letter_queue,
                                       outcome.body, outcome.properties)

    def _reopen_confirms(self) -> None:
        """A refused publish can close the confirm channel (404 on a missing exchange)."""
        conn = self._conn
        if conn is not None and conn.is_open and not self._confirms.is_open:
            self._confirms = conn.channel()
            self._confirms.confirm_delivery()

    def _conn_call_later(self, delay: float, callback: Callable[[], None]) -> None:
        conn = self._conn
        if conn is not None and conn.is_open:
            conn.call_later(delay, callback)

    def _nack(self, channel: Any, delivery: Delivery) -> None:
        if channel.is_open and delivery.generation == self._generation:
            try:
                channel.basic_nack(delivery.tag, requeue=True)
            except (pika.exceptions.AMQPError, OSError):
                pass  # the channel went: the broker redelivers it anyway

    def _settle_abandoned(self, delivery: Delivery, reason: str, error: str) -> None:
        try:
            channel = self._channel
            if channel is not None and channel.is_open and delivery.generation == self._generation:
                attempt = jobs.attempt_of_delivery(delivery.properties)
                outcome = self._runner.failure(delivery.properties, delivery.body, attempt,
                                               reason, error_type="Timeout", error=error)
                self.abandon_settled = self._settle(channel, delivery, outcome)
                self._runner.job_finished(outcome.stat)
        finally:
            self.abandon_done.set()

    # -- job thread -------------------------------------------------------------------

    def _job_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and self._stop_reason is None:
                    self._lock.wait()
                if self._stop_reason is not None:
                    return
                delivery = self._in_flight = self._pending.popleft()
            outcome = self._runner.run(delivery.properties, delivery.body, delivery.redelivered)
            recycle = self._after_job() if outcome.kind != jobs.REDELAY else None
            with self._lock:
                if self._abandoned is delivery:
                    return  # the I/O thread already settled it
                self._in_flight = None
                # Results already waiting means a _settle_results call is queued and has not
                # taken them yet: it takes this one too. One I/O-thread wake-up per batch,
                # not per message.
                settle_queued = bool(self._results)
                self._results.append((delivery, outcome))
                if outcome.kind != jobs.REDELAY:
                    self._jobs_started += 1
                if self._max_jobs and self._jobs_started >= self._max_jobs:
                    recycle = recycle or "max_jobs"
                if recycle and self._stop_reason is None:
                    # The I/O thread hands back the prefetched rest when it settles this.
                    self._stop_reason = recycle
                self._runner.held(len(self._pending))
                conn = self._conn
            if not settle_queued:
                _call_soon(conn, self._settle_results)


def _hand_back(channel: Any, tag: int) -> None:
    """Return a message this worker never started to the queue: basic.nack with requeue,
    not basic.reject. Since RabbitMQ 4.3 a basic.reject counts as a failed delivery attempt
    (x-delivery-count, and a quorum queue drops a message past its delivery limit, 20 by
    default) while basic.nack does not: workers that stop or recycle must not use up the
    attempts of messages they never ran. Before 4.3 the two requeue alike."""
    channel.basic_nack(tag, multiple=False, requeue=True)


def _ack_unflushed(channel: Any, tag: int) -> None:
    """Ack without BlockingChannel's write-and-poll per call: the frame joins the outbound
    buffer and the I/O loop writes it on its next turn, with every other ack settled in
    this batch (and before any close frame). With a no-op job this is a third of a worker's
    CPU per message (see docs/benchmarks.md). Falls back to the public call if pika's
    channel implementation is not where every pika 1.x keeps it."""
    impl = getattr(channel, "_impl", None)
    if impl is None or not hasattr(impl, "basic_ack"):
        channel.basic_ack(tag)
    else:
        impl.basic_ack(delivery_tag=tag, multiple=False)


def _call_soon(conn: Optional[pika.BlockingConnection], callback: Callable[[], None]) -> None:
    """Run `callback` on the I/O thread; without a connection there is nothing to do
    (the broker takes back whatever we held when the connection went)."""
    if conn is None:
        return
    try:
        conn.add_callback_threadsafe(callback)
    except (pika.exceptions.AMQPError, OSError, AttributeError):
        pass
