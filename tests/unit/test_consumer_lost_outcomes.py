"""A job whose broker connection died under it: its outcome cannot be settled, the broker
redelivers the message, and the worker tells the master (`unsettled`) so that the lost run
counts as a failed attempt. The job thread tells it before it takes the next delivery
(which may be the redelivered copy, whose crashes question must find the report); the I/O
thread tells what it has to drop; and a connection the broker has already hung up on,
though pika has not read that yet (a handler held the GIL past the heartbeat timeout), is
seen from the kernel's TCP state before an ack is written into it."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pika
import pytest

from qsupervisor.broker.delays import DelayChain
from qsupervisor.config.model import ProgramConfig
from qsupervisor.worker import consumer as consumer_mod
from qsupervisor.worker import jobs
from qsupervisor.worker.consumer import Consumer, Delivery, WorkerEvents
from tests.unit.test_consumer_hand_back import FakeChannel

TIMEOUT = 5.0


class Journal(WorkerEvents):
    """The consumer's events and the runner's calls, in the order they happened."""

    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def add(self, *entry: str) -> None:
        with self.lock:
            self.log.append(entry)

    def unsettled(self, message_id: str, how: str) -> None:
        self.add("unsettled", message_id, how)


class ScriptedRunner:
    """Runs nothing: records the job, asks about redelivered ones as JobRunner does."""

    def __init__(self, journal: Journal, kind: str = jobs.ACK) -> None:
        self.journal = journal
        self.kind = kind

    def run(self, properties: Any, body: bytes, redelivered: bool) -> jobs.Outcome:
        if redelivered:
            self.journal.add("asked", properties.message_id)
        self.journal.add("ran", properties.message_id)
        return jobs.Outcome(self.kind, properties.message_id)

    def held(self, count: int) -> None:
        pass

    def job_finished(self, stat: int) -> None:
        pass


def _consumer(journal: Journal, kind: str = jobs.ACK) -> tuple[Consumer, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    program = ProgramConfig(name="orders", handler="shop.jobs:work", queue="orders")
    consumer = Consumer("amqp://guest:guest@127.0.0.1:5672/%2F", program,
                        DelayChain("orders.delay", "orders"), max_jobs=0,
                        runner=ScriptedRunner(journal, kind),  # type: ignore[arg-type]
                        events=journal, name="test")
    consumer._channel = FakeChannel(calls)
    consumer._confirms = FakeChannel(calls)
    consumer._consumer_tag = "ctag"
    return consumer, calls


def _delivery(generation: int, tag: int, msg_id: str, redelivered: bool = False) -> Delivery:
    return Delivery(generation, tag, pika.BasicProperties(message_id=msg_id), b"{}",
                    redelivered)


def _run_job_thread(consumer: Consumer, journal: Journal, jobs_expected: int) -> None:
    thread = threading.Thread(target=consumer._job_loop, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while sum(e[0] == "ran" for e in list(journal.log)) < jobs_expected:
        assert time.monotonic() < deadline, journal.log
        time.sleep(0.002)
    with consumer._lock:
        consumer._stop_reason = "stop"
        consumer._lock.notify_all()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_a_job_that_ends_after_its_connection_went_is_told_before_the_next_is_taken() -> None:
    journal = Journal()
    consumer, calls = _consumer(journal)
    consumer._generation = 2  # the I/O thread has reconnected since msg-1 arrived
    consumer._conn = object()  # type: ignore[assignment]
    consumer._pending.extend([_delivery(1, 5, "msg-1"),
                              _delivery(2, 1, "msg-1", redelivered=True)])  # its copy
    _run_job_thread(consumer, journal, jobs_expected=2)
    assert journal.log == [("ran", "msg-1"),
                           ("unsettled", "msg-1", consumer_mod.LOST_DURING_JOB),
                           ("asked", "msg-1"), ("ran", "msg-1")]
    # Only the copy's outcome waits to be settled; the lost one is not acked on the new
    # connection (its tag there would be another message's).
    assert [d.tag for d, _ in consumer._results] == [1]


def test_a_job_that_ends_while_the_connection_is_down_is_told() -> None:
    journal = Journal()
    consumer, _ = _consumer(journal)
    consumer._generation = 1
    consumer._conn = None  # lost, not yet reconnected
    consumer._pending.append(_delivery(1, 5, "msg-2"))
    _run_job_thread(consumer, journal, jobs_expected=1)
    assert ("unsettled", "msg-2", consumer_mod.LOST_DURING_JOB) in journal.log
    assert not consumer._results


def test_a_job_on_a_live_connection_is_not_told() -> None:
    journal = Journal()
    consumer, _ = _consumer(journal)
    consumer._generation = 1
    consumer._conn = object()  # type: ignore[assignment]
    consumer._pending.append(_delivery(1, 5, "msg-3"))
    _run_job_thread(consumer, journal, jobs_expected=1)
    assert journal.log == [("ran", "msg-3")]
    assert [d.tag for d, _ in consumer._results] == [5]


def test_the_io_thread_tells_the_outcomes_it_drops_and_acks_the_rest() -> None:
    journal = Journal()
    consumer, calls = _consumer(journal)
    consumer._generation = 2
    consumer._results.extend([(_delivery(1, 5, "old"), jobs.Outcome(jobs.ACK, "old")),
                              (_delivery(2, 6, "new"), jobs.Outcome(jobs.ACK, "new"))])
    consumer._settle_results()
    assert calls == [("ack", 6)]
    assert journal.log == [("unsettled", "old", consumer_mod.LOST_BEFORE_SETTLED)]


def test_a_redelay_that_is_dropped_is_not_told_it_was_no_run() -> None:
    journal = Journal()
    consumer, _ = _consumer(journal)
    consumer._generation = 2
    consumer._results.append((_delivery(1, 5, "early"), jobs.Outcome(jobs.REDELAY, "early")))
    consumer._settle_results()
    assert journal.log == []


def test_a_settle_that_the_channel_fails_is_told_but_not_an_abandoned_jobs() -> None:
    journal = Journal()
    consumer, _ = _consumer(journal)

    class Broken(FakeChannel):
        def basic_ack(self, tag: int, multiple: bool = False) -> None:
            raise pika.exceptions.ChannelClosed(406, "closed")

    broken = Broken([])
    retry = jobs.Outcome(jobs.RETRY, "msg-4", b"{}", pika.BasicProperties(headers={}),
                         delay=1.0)
    assert not consumer._settle(broken, _delivery(0, 5, "msg-4"), retry)
    assert journal.log == [("unsettled", "msg-4", consumer_mod.LOST_BEFORE_SETTLED)]
    journal.log.clear()
    # The abandoned job's worker exits holding it: the master records it from there.
    assert not consumer._settle(broken, _delivery(0, 5, "msg-4"), retry, report_lost=False)
    assert journal.log == []


class _Conn:
    """Where pika 1.x keeps a BlockingConnection's socket."""

    def __init__(self, sock: socket.socket) -> None:
        transport = type("Transport", (), {"_sock": sock})()
        self._impl = type("Impl", (), {"_transport": transport})()


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def test_a_connection_the_broker_hung_up_on_is_seen_before_pika_reads_it() -> None:
    client, server = _tcp_pair()
    try:
        server.sendall(b"\x08" * 8)  # unread data, as heartbeats would be: no EOF to read
        assert not consumer_mod._broker_hung_up(_Conn(client))  # type: ignore[arg-type]
        server.close()
        deadline = time.monotonic() + TIMEOUT
        while not consumer_mod._broker_hung_up(_Conn(client)):  # type: ignore[arg-type]
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        client.close()
        server.close()
    assert not consumer_mod._broker_hung_up(None)
    assert not consumer_mod._broker_hung_up(object())  # type: ignore[arg-type]


def test_outcomes_on_a_connection_the_broker_hung_up_on_are_told_not_acked() -> None:
    journal = Journal()
    consumer, calls = _consumer(journal)
    client, server = _tcp_pair()
    try:
        consumer._conn = _Conn(client)  # type: ignore[assignment]
        server.close()
        deadline = time.monotonic() + TIMEOUT
        while not consumer_mod._broker_hung_up(consumer._conn):
            assert time.monotonic() < deadline
            time.sleep(0.002)
        consumer._results.append((_delivery(0, 5, "msg-6"), jobs.Outcome(jobs.ACK, "msg-6")))
        consumer._settle_results()
    finally:
        client.close()
    assert calls == []
    assert journal.log == [("unsettled", "msg-6", consumer_mod.LOST_BEFORE_SETTLED)]


class _ReconnectChannel(FakeChannel):
    def __init__(self, journal: Journal) -> None:
        super().__init__([])
        self.journal = journal

    def confirm_delivery(self) -> None:
        pass

    def add_on_cancel_callback(self, callback: Any) -> None:
        pass

    def basic_consume(self, queue: str, callback: Any) -> str:
        self.journal.add("consume", queue)
        return "ctag"


class _ReconnectingConnection:
    """A new connection that opens its channels, then is lost at its first I/O turn."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.is_open = True

    def channel(self) -> _ReconnectChannel:
        return _ReconnectChannel(self.journal)

    def process_data_events(self, time_limit: float = 0) -> None:
        self.is_open = False
        raise pika.exceptions.StreamLostError("lost again")


def test_outcomes_of_the_previous_connection_are_told_before_consuming_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal()
    consumer, _ = _consumer(journal)
    monkeypatch.setattr(consumer_mod.pika, "BlockingConnection",
                        lambda params: _ReconnectingConnection(journal))
    consumer._generation = 1
    consumer._announced = True
    consumer._results.extend([(_delivery(1, 5, "done"), jobs.Outcome(jobs.ACK, "done")),
                              (_delivery(1, 6, "later"), jobs.Outcome(jobs.REDELAY, "later"))])
    try:
        consumer._consume()
    except pika.exceptions.StreamLostError:
        pass
    # Its redelivered copy can only come on the new consumer: the master hears first.
    assert journal.log == [("unsettled", "done", consumer_mod.LOST_BEFORE_SETTLED),
                           ("consume", "orders")]
    assert consumer._generation == 2 and not consumer._results
