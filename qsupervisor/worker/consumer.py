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
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import pika
import pika.exceptions

from qsupervisor import logs
from qsupervisor.broker import connection, publisher, returns
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
# A message whose retry or dead letter the broker refused is held (unacked) and its publish
# tried again after this pause, doubling up to the maximum. Not given back: every return
# counts towards a quorum queue's delivery limit, and the job would run again for nothing.
PUBLISH_RETRY_INITIAL = 1.0
PUBLISH_RETRY_MAX = 30.0
# How the master is told a job's outcome was lost with the connection (`unsettled`): the
# broker redelivers the message, and the run counts as a failed attempt.
LOST_DURING_JOB = "broker connection lost during the job"
LOST_BEFORE_SETTLED = "broker connection lost before the job's outcome was settled"
TCP_ESTABLISHED = 1  # linux/tcp_states.h; the first byte of TCP_INFO is the state


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

    def ready(self, node: str) -> None: ...
    def broker_lost(self, error: str) -> None: ...
    def broker_back(self, node: str) -> None: ...
    def unsettled(self, message_id: str, how: str) -> None: ...


class Consumer:
    def __init__(self, broker: Sequence[str], program: ProgramConfig, chain: DelayChain,
                 max_jobs: int, runner: JobRunner, events: WorkerEvents, name: str,
                 after_job: Callable[[], str | None] = lambda: None) -> None:
        self._nodes = connection.BrokerNodes(broker)
        self._name = name
        self._node = ""  # the URL of the node of the current (or last) connection
        self._program = program
        self._chain = chain
        self._max_jobs = max_jobs
        self._runner = runner
        self._events = events
        self._after_job = after_job  # a reason to recycle (max_memory), or None
        # Guards everything the threads share: the hand-off queues, the connection handle
        # and the stop reason.
        self._lock = threading.Condition()
        self._pending: collections.deque[Delivery] = collections.deque()
        self._results: collections.deque[tuple[Delivery, Outcome]] = collections.deque()
        self._in_flight: Delivery | None = None
        self._abandoned: Delivery | None = None
        self._stop_reason: str | None = None
        self._stop_event = threading.Event()
        self.abandon_done = threading.Event()
        self.abandon_settled = False  # the timed-out job's message was retried/dead-lettered
        self._cancelled_by_broker = False
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._confirms: Any = None  # a channel in confirm mode, for retries and dead letters
        self._consumer_tag = ""
        self._prefetch = 0  # the prefetch window in force on the consuming channel
        self._nack_is_free = False  # see returns.nack_is_free; set per connection
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
            except (pika.exceptions.AMQPError, OSError, connection.BrokerUnreachable) as exc:
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
        conn, self._node = self._nodes.connect(name=self._name)
        node = connection.display_url(self._node)
        try:
            channel = conn.channel()
            self._prefetch = self._prefetch_window()
            channel.basic_qos(prefetch_count=self._prefetch)
            self._nack_is_free = returns.nack_is_free(self._program.queue_type,
                                                      returns.broker_version(conn))
            confirms = conn.channel()
            confirms.confirm_delivery()
            with self._lock:
                self._generation += 1
                # Outcomes of the previous connection cannot be acked: the broker redelivers
                # those messages, on this connection at the earliest, so the master hears of
                # them before this worker can ask about a redelivered copy.
                lost, self._results = list(self._results), collections.deque()
                self._conn, self._channel, self._confirms = conn, channel, confirms
            self._report_lost(lost, LOST_BEFORE_SETTLED)
            self._cancelled_by_broker = False
            channel.add_on_cancel_callback(self._on_broker_cancel)
            self._consumer_tag = channel.basic_consume(self._program.queue, self._on_message)
            if self._stop_reason is not None:
                self._begin_stop()
            elif not self._announced:
                self._announced = True
                self._events.ready(node)
            else:
                log.info("reconnected to the broker", queue=self._program.queue, node=node)
                self._events.broker_back(node)
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
                return self.abandon_done.is_set() and not self._pending
            return (self._stop_reason is not None and self._in_flight is None
                    and not self._results and not self._pending)

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        delivery = Delivery(self._generation, method.delivery_tag, properties, body,
                            bool(method.redelivered))
        with self._lock:
            self._pending.append(delivery)
            stopping = self._stop_reason is not None
            if not stopping:
                self._lock.notify_all()
                self._runner.held(len(self._pending) + (self._in_flight is not None))
        if stopping:
            # Arrived while we cancel: the job thread takes nothing more, and it is given
            # back with the rest once the consumer is cancelled, not from inside this
            # dispatch: a copy published here would come straight back to this consumer,
            # which would copy it again, and so on without end.
            self._conn_call_later(0, self._begin_stop)

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
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not cancel the consumer; the broker will redeliver what "
                        "this worker holds", error=repr(exc))
            return
        self._hand_back(channel, handed_back)

    def _hand_back(self, channel: Any, deliveries: list[Delivery]) -> None:
        """Give back messages this worker holds but never started, without using up their
        delivery limit (see broker/returns.py): a nack where that is free, otherwise a
        confirmed copy, then an ack. A copy the broker refuses falls back to the nack:
        counted, but the message stays in the queue."""
        try:
            for delivery in deliveries:
                if not self._nack_is_free and self._confirms_open():
                    try:
                        returns.return_as_copy(self._confirms, channel, self._program.queue,
                                               delivery.tag, delivery.properties,
                                               delivery.body)
                        continue
                    except publisher.PublishError as exc:
                        log.warning("could not return a prefetched message as a copy; "
                                    "returning it with a nack", error=str(exc))
                channel.basic_nack(delivery.tag, multiple=False, requeue=True)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not hand back prefetched messages; the broker will "
                        "redeliver them", error=repr(exc))

    def _connection_lost(self, exc: BaseException) -> None:
        # Unacked deliveries, started or not, return to the queue when the channel dies;
        # drop our copies so that nothing runs twice on our side.
        with self._lock:
            self._pending.clear()
            self._runner.held(self._in_flight is not None)
        if self._node and not isinstance(exc, connection.BrokerUnreachable):
            # The node we were on went away (or closed our channel): another node of the
            # cluster, if there is one, is tried first.
            self._nodes.demote(self._node)
        if self._stop_reason is None:
            log.warning("broker connection lost; reconnecting", queue=self._program.queue,
                        error=repr(exc))
            self._events.broker_lost(repr(exc))

    def _settle_results(self) -> None:
        """Carry out finished jobs' outcomes; runs on the I/O thread."""
        with self._lock:
            results, self._results = list(self._results), collections.deque()
            generation, channel, conn = self._generation, self._channel, self._conn
        if results and _broker_hung_up(conn):
            # A handler that held the GIL past the heartbeat timeout starved this thread:
            # the broker has closed the connection, but pika has not read that yet, and an
            # ack written now would vanish unnoticed.
            self._report_lost(results, LOST_BEFORE_SETTLED)
            return
        if self._stop_reason is not None:
            # Cancel before the acks: an ack frees a prefetch slot, which the broker would
            # fill with a message this worker then has to give back.
            self._begin_stop()
        else:
            self._narrow_prefetch(channel)
        for delivery, outcome in results:
            if delivery.generation != generation or channel is None or not channel.is_open:
                # Its channel is gone: the broker redelivers it.
                self._report_lost([(delivery, outcome)], LOST_BEFORE_SETTLED)
                continue
            self._settle(channel, delivery, outcome)

    def _prefetch_window(self) -> int:
        """The program's prefetch, but never more messages than this worker will still
        start before max_jobs recycles it: a recycle then has nothing to give back, and
        the messages go to workers that will run them."""
        prefetch = self._program.prefetch
        if not self._max_jobs:
            return prefetch
        with self._lock:
            left = self._max_jobs - self._jobs_started
        return max(1, min(prefetch, left))

    def _narrow_prefetch(self, channel: Any) -> None:
        """Lower the window as max_jobs nears; called before the acks that free slots, so
        the broker applies the new window to the deliveries those acks allow."""
        window = self._prefetch_window()
        if window >= self._prefetch or channel is None or not channel.is_open:
            return
        try:
            channel.basic_qos(prefetch_count=window)
            self._prefetch = window
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not narrow the prefetch window", error=repr(exc))

    def _settle(self, channel: Any, delivery: Delivery, outcome: Outcome,
                pause: float = PUBLISH_RETRY_INITIAL, report_lost: bool = True) -> bool:
        """Publish what the outcome asks for, confirmed, then ack the original; if the
        publish fails the original stays unacked and the publish is tried again after
        `pause`: never both lost. True once the original is acked. A settle the channel
        fails is reported to the master, unless the caller accounts for it otherwise
        (an abandoned job: the master records it from the worker's exit)."""
        try:
            if outcome.kind == jobs.ACK:
                _ack_unflushed(channel, delivery.tag)
                return True
            try:
                self._publish(outcome)
            except publisher.PublishError as exc:
                log.error("could not publish the retry or dead letter; holding the message "
                          "and trying again", message_id=outcome.message_id,
                          error=str(exc), retry_in=pause)
                self._reopen_confirms()
                self._settle_later(channel, delivery, outcome, pause)
                return False
            channel.basic_ack(delivery.tag)
            return True
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not settle the message; the broker will redeliver it",
                        message_id=outcome.message_id, error=repr(exc))
            if report_lost:
                self._report_lost([(delivery, outcome)], LOST_BEFORE_SETTLED)
            return False

    def _publish(self, outcome: Outcome) -> None:
        if outcome.kind in (jobs.RETRY, jobs.REDELAY):
            publisher.publish_delayed(self._confirms, self._chain, outcome.body,
                                      outcome.properties, outcome.delay)
        elif outcome.kind == jobs.DEAD:
            publisher.publish_to_queue(self._confirms, self._program.dead_letter_queue,
                                       outcome.body, outcome.properties)

    def _confirms_open(self) -> bool:
        self._reopen_confirms()
        return self._confirms is not None and self._confirms.is_open

    def _reopen_confirms(self) -> None:
        """A refused publish can close the confirm channel (404 on a missing exchange)."""
        conn = self._conn
        if conn is not None and conn.is_open and self._confirms is not None \
                and not self._confirms.is_open:
            self._confirms = conn.channel()
            self._confirms.confirm_delivery()

    def _conn_call_later(self, delay: float, callback: Callable[[], None]) -> None:
        conn = self._conn
        if conn is not None and conn.is_open:
            conn.call_later(delay, callback)

    def _settle_later(self, channel: Any, delivery: Delivery, outcome: Outcome,
                      pause: float) -> None:
        """Try a refused settle again after `pause`, for as long as the channel lives. A
        stopping worker does not wait for it: its channel closes, and the broker gives the
        message to the next worker (one counted return, the only way left)."""
        def again() -> None:
            if channel.is_open and delivery.generation == self._generation:
                self._settle(channel, delivery, outcome, min(PUBLISH_RETRY_MAX, pause * 2))
            else:  # held until its channel went: the broker redelivers it
                self._report_lost([(delivery, outcome)], LOST_BEFORE_SETTLED)
        self._conn_call_later(pause, again)

    def _settle_abandoned(self, delivery: Delivery, reason: str, error: str) -> None:
        try:
            channel = self._channel
            if channel is not None and channel.is_open and delivery.generation == self._generation:
                attempt = jobs.attempt_of_delivery(delivery.properties)
                outcome = self._runner.failure(delivery.properties, delivery.body, attempt,
                                               reason, error_type="Timeout", error=error)
                self.abandon_settled = self._settle(channel, delivery, outcome,
                                                    report_lost=False)
                self._runner.job_finished(outcome.stat, outcome.timed_out)
        finally:
            self.abandon_done.set()
        self._begin_stop()  # what was prefetched goes back uncounted, not with the channel

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
                # The connection it came on is gone (the I/O thread has seen it close): it
                # cannot be settled, and a redelivered copy may be next in _pending.
                lost = delivery.generation != self._generation or self._conn is None
                if not lost:
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
            if lost:
                # Told from this thread, before it takes the next delivery: the master has
                # it before this worker asks about a redelivered copy.
                self._report_lost([(delivery, outcome)], LOST_DURING_JOB)
            if not settle_queued:
                _call_soon(conn, self._settle_results)

    def _report_lost(self, results: list[tuple[Delivery, Outcome]], how: str) -> None:
        """Tell the master of jobs whose outcome went with the connection: the broker
        redelivers their messages, and each run counts as a failed attempt. A redelay
        was no run, and is not told."""
        for _delivery, outcome in results:
            if outcome.kind == jobs.REDELAY:
                continue
            log.warning("the job's outcome was lost with the broker connection; it counts "
                        "as a failed attempt when the message comes back",
                        message_id=outcome.message_id, how=how)
            self._events.unsettled(outcome.message_id, how)


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


def _broker_hung_up(conn: pika.BlockingConnection | None) -> bool:
    """Whether the broker has closed this connection's TCP socket (our side is no longer
    ESTABLISHED: the peer's FIN or RST has arrived) although pika has not read it yet.
    Reads the kernel's state, not the socket's data, so it is safe beside pika's thread.
    Best effort: False when pika keeps its socket elsewhere than every 1.x release does,
    or the platform has no TCP_INFO."""
    transport = getattr(getattr(conn, "_impl", None), "_transport", None)
    sock = getattr(transport, "_sock", None)
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 1)
    except (OSError, ValueError):
        return False
    return bool(info) and info[0] != TCP_ESTABLISHED


def _call_soon(conn: pika.BlockingConnection | None, callback: Callable[[], None]) -> None:
    """Run `callback` on the I/O thread; without a connection there is nothing to do
    (the broker takes back whatever we held when the connection went)."""
    if conn is None:
        return
    try:
        conn.add_callback_threadsafe(callback)
    except (pika.exceptions.AMQPError, OSError, AttributeError):
        pass
