"""A program consuming a queue that yii2-queue's AMQP driver declares and publishes to
(issue #12), in place: the queue is classic with {x-max-priority: 10} and no x-queue-type,
bound with the routing key "" to a durable direct exchange, and yii's delayed pushes wait in
an enqueue-style per-delay queue (x-message-ttl, dead-lettered to the exchange) before they
come back through the binding. Every message is counted; priorities are honoured by the
broker, kept through qsupervisor's retries (the delay chain of quorum queues) and kept on
dead-lettered messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from .daemon import MakeDaemon
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker

DELAY_MS = 1500  # the enqueue-style delayed pushes


def yii_declares(channel: Any, queue: str, exchange: str) -> None:
    """yii\\queue\\amqp_interop's setupBroker, which runs before every push."""
    channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 10})
    channel.exchange_declare(exchange, "direct", durable=True)
    channel.queue_bind(queue, exchange, "")


def enqueue_delay_queue(channel: Any, exchange: str, delay_ms: int) -> str:
    """enqueue's RabbitMqDlxDelayStrategy: a queue per delay, expiring into the exchange."""
    name = f"enqueue.{exchange}.{delay_ms}.x.delay"
    channel.queue_declare(name, durable=True, arguments={
        "x-message-ttl": delay_ms, "x-dead-letter-exchange": exchange,
        "x-dead-letter-routing-key": ""})
    return name


@pytest.fixture
def yii(broker: Broker) -> Iterator[tuple[str, str]]:
    """(queue, exchange) of one test; deleted with the per-delay queue afterwards."""
    queue, exchange = f"e2e-yii-{uuid.uuid4().hex[:12]}", f"e2e-yii-x-{uuid.uuid4().hex[:12]}"
    broker.queues.append(queue)  # and its dead-letter queue and delay chain
    yield queue, exchange
    channel = broker.channel
    channel.queue_delete(f"enqueue.{exchange}.{DELAY_MS}.x.delay")
    channel.exchange_delete(exchange)


def push(channel: Any, exchange: str, tag: str, priority: int | None = None,
         routing_key: str = "", **payload: Any) -> str:
    """A message as a producer publishes it: to the exchange (or, routing_key set with
    exchange "", to a per-delay queue), confirmed."""
    msg_id = uuid.uuid4().hex
    channel.basic_publish(exchange, routing_key, json.dumps({"tag": tag, **payload}).encode(),
                          pika.BasicProperties(message_id=msg_id, delivery_mode=2,
                                               priority=priority,
                                               content_type="application/json"),
                          mandatory=True)
    return msg_id


def yii_program(queue: str, exchange: str, ledger: Ledger, **settings: Any) -> dict[str, Any]:
    return runtime_program(queue, ledger, queue_type="classic",
                           queue_arguments={"x-max-priority": 10},
                           bindings=[{"exchange": exchange, "routing_key": ""}],
                           prefetch=1, **settings)


def test_a_yii_declared_queue_is_consumed_in_place_highest_priority_first_delays_included(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, yii: tuple[str, str]) -> None:
    queue, exchange = yii
    channel = broker.channel
    yii_declares(channel, queue, exchange)
    delayed_queue = enqueue_delay_queue(channel, exchange, DELAY_MS)
    low = [push(channel, exchange, "low", priority=1) for _ in range(10)]
    none = [push(channel, exchange, "none") for _ in range(5)]
    high = [push(channel, exchange, "high", priority=9) for _ in range(10)]
    delayed = [push(channel, "", "delayed", priority=5, routing_key=delayed_queue)
               for _ in range(5)]
    daemon = daemons({"yii": yii_program(queue, exchange, ledger, workers=1)})
    daemon.start()

    entries = ledger.wait_for_ids(low + none + high + delayed)
    assert sorted(ledger.counts().values()) == [1] * 30, "a message ran twice"
    first = [e for e in entries if e["tag"] in ("low", "none", "high")]
    tags = [e["tag"] for e in first]
    # All 25 waited in the queue before the one worker (prefetch 1) started.
    assert tags == ["high"] * 10 + ["low"] * 10 + ["none"] * 5, tags
    # yii keeps declaring as it pushes, with the program consuming: both are accepted.
    yii_declares(broker.channel, queue, exchange)
    later = push(broker.channel, exchange, "after yii declared again", priority=3)
    ledger.entry(later)
    assert broker.counts(queue).messages == 0 and broker.counts(delayed_queue).messages == 0
    assert broker.counts(f"{queue}.failed").messages == 0
    print(f"\nyii queue: {len(entries) + 1} messages, each once; 10 high before 10 low "
          f"before 5 without priority; {len(delayed)} through {delayed_queue}")


def test_a_retried_message_keeps_its_priority_and_a_dead_letter_keeps_it_too(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, yii: tuple[str, str],
        tmp_path: Path) -> None:
    queue, exchange = yii
    poison, blocker = tmp_path / "poison", tmp_path / "blocker"
    poison.touch()
    daemon = daemons({"yii": yii_program(queue, exchange, ledger, workers=1, attempts=3,
                                         backoff={"initial": "2s", "factor": 1, "max": "2s",
                                                  "jitter": 0})})
    daemon.start()  # qsupervisor declares first: the exchange, the queue, the binding
    channel = broker.channel
    retried = push(channel, exchange, "retried", priority=9, fail_while=str(poison))
    wait_for(lambda: [e for e in ledger.entries() if e["id"] == retried],
             what="the first, failing run of the priority 9 message")
    # While it waits in the delay chain, the worker takes a job that blocks, and low
    # priority messages queue up behind it.
    blocker.touch()
    blocking = push(channel, exchange, "blocking", priority=1, block_while=str(blocker))
    wait_for(lambda: any(e["id"] == blocking for e in ledger.entries()),
             what="the blocking job to start")
    low = [push(channel, exchange, "low", priority=1) for _ in range(10)]
    poison.unlink()  # its next run succeeds
    wait_for(lambda: broker.counts(queue).messages == 11,
             what=lambda: f"the retry back in {queue} beside 10 low ones "
                          f"({broker.counts(queue)})")
    blocker.unlink()

    entries = ledger.wait_for_ids([retried, blocking, *low])
    order = [(e["tag"], e["attempt"]) for e in entries]
    assert order[:3] == [("retried", 1), ("blocking", 1), ("retried", 2)], order
    assert [tag for tag, _ in order[3:]] == ["low"] * 10, order

    # A message that fails every attempt is dead-lettered with its priority.
    dead_file = tmp_path / "dead"
    dead_file.touch()
    dead = push(channel, exchange, "dead", priority=7, fail_while=str(dead_file))
    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 1, timeout=60,
             what="the always failing message in the dead-letter queue")
    [(properties, _)] = broker.peek(f"{queue}.failed")
    assert properties.message_id == dead and properties.priority == 7
    assert [e["attempt"] for e in ledger.entries() if e["id"] == dead] == [1, 2, 3]
    assert broker.counts(queue).messages == 0


def test_update_with_new_arguments_is_refused_by_the_broker_and_the_workers_keep_running(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, yii: tuple[str, str]) -> None:
    queue, exchange = yii
    second = f"{exchange}-audit"
    programs = {"yii": yii_program(queue, exchange, ledger, workers=2)}
    daemon = daemons(programs)
    daemon.start()
    before = {w["pid"] for w in daemon.status("yii")["programs"]["yii"]["workers"]}

    programs["yii"]["queue_arguments"] = {"x-max-priority": 5}
    programs["yii"]["bindings"].append({"exchange": second, "type": "fanout"})
    daemon.write(programs)
    result = daemon.ctl("update")  # waits for the new leader, which the broker refuses
    assert result.returncode == 1, str(result)
    assert any("queue_arguments changed; RabbitMQ cannot change" in w
               for w in result.json()["warnings"]), result.json()
    [problem] = result.json()["programs"]["yii"]["problems"]
    assert "already exists with x-max-priority '10'" in problem, problem

    def refused() -> Any:
        program = daemon.status("yii")["programs"]["yii"]
        return program if "x-max-priority" in (program.get("error") or "") else None

    program = wait_for(refused, what=lambda: f"the refusal in status: {daemon.status()}")
    assert "already exists with x-max-priority '10'" in program["error"], program["error"]
    assert "set `queue_arguments: {x-max-priority: 10}`" in program["error"], program["error"]
    assert program["state"] == "RUNNING"
    assert {w["pid"] for w in program["workers"]} == before
    job = push(broker.channel, exchange, "still consumed", priority=2)
    ledger.entry(job)

    # Back to the queue's arguments, keeping the new binding: the new leader binds it.
    programs["yii"]["queue_arguments"] = {"x-max-priority": 10}
    daemon.write(programs)
    assert daemon.ctl("update").returncode == 0
    try:
        wait_for(lambda: broker.exists(queue) and _routed(broker, second),
                 what=f"queue {queue} bound to {second}")
        job = push(broker.channel, second, "through the new binding")
        ledger.entry(job)
    finally:
        broker.channel.exchange_delete(second)


def _routed(broker: Broker, exchange: str) -> bool:
    """True once `exchange` exists (the new leader declares it before binding)."""
    try:
        broker.channel.exchange_declare(exchange, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
