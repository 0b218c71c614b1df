"""When a message can go back to its queue with a nack, and what its copy looks like
otherwise (see qsupervisor/broker/returns.py for the measured table)."""

from __future__ import annotations

import pika
import pytest

from qsupervisor.broker import returns


@pytest.mark.parametrize("text, version", [
    ("4.0.5", (4, 0, 5)), (b"3.10.8", (3, 10, 8)), ("4.1.0-rc.1", (4, 1, 0)),
    ("3.13.7+5.g1234", (3, 13, 7)), ("4.3", (4, 3)), ("", None), ("unknown", None),
    (None, None), (4, None)])
def test_the_broker_version_is_read_from_its_release_number(text: object, version: object) -> None:
    assert returns.parse_version(text) == version


@pytest.mark.parametrize("queue_type, version, free", [
    ("classic", (3, 10, 8), True),  # no delivery limit on a classic queue
    ("classic", None, True),
    ("quorum", (3, 10, 8), False),  # counted; no default limit, but a policy may set one
    ("quorum", (4, 0, 5), False),  # counted, and the default limit is 20
    ("quorum", (4, 2, 9), False),
    ("quorum", (4, 3, 0), True),  # rabbitmq-server#15387: a nack is not a failed attempt
    ("quorum", (5, 0), True),
    ("quorum", None, False),  # unknown: a copy is always safe, a counted nack is not
])
def test_a_nack_is_free_on_classic_queues_and_on_quorum_queues_from_4_3(
        queue_type: str, version: object, free: bool) -> None:
    assert returns.nack_is_free(queue_type, version) is free  # type: ignore[arg-type]


def test_a_copy_keeps_body_properties_and_headers_but_the_count_and_the_producers_login() -> None:
    original = pika.BasicProperties(
        message_id="m1", content_type="application/json", delivery_mode=2, priority=3,
        user_id="producer", headers={"x-delivery-count": 4, "x-qsupervisor-attempt": 2,
                                     "x-death": [{"queue": "orders"}]})
    copy = returns.copy_properties(original)
    assert copy.headers == {"x-qsupervisor-attempt": 2, "x-death": [{"queue": "orders"}]}
    assert (copy.message_id, copy.content_type, copy.delivery_mode, copy.priority) == (
        "m1", "application/json", 2, 3)
    assert copy.user_id is None
    assert original.headers["x-delivery-count"] == 4 and original.user_id == "producer"


def test_the_delivery_count_is_zero_when_the_broker_gives_none() -> None:
    assert returns.delivery_count(pika.BasicProperties()) == 0
    assert returns.delivery_count(pika.BasicProperties(headers={"x-delivery-count": 7})) == 7
