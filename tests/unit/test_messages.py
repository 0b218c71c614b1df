from __future__ import annotations

import hashlib
from typing import Any

import pika
import pytest

from qsupervisor.broker import messages as m


def test_json_payloads_are_compact_utf8_with_the_json_content_type() -> None:
    body, content_type = m.encode({"name": "café", "n": [1, 2]}, "json")
    assert body == '{"name":"café","n":[1,2]}'.encode()
    assert content_type == "application/json"
    assert m.decode(body, "json") == {"name": "café", "n": [1, 2]}


def test_json_refuses_what_other_languages_cannot_read() -> None:
    with pytest.raises(ValueError):
        m.encode(float("nan"), "json")
    with pytest.raises(TypeError):
        m.encode(object(), "json")


def test_raw_payloads_pass_through_as_bytes() -> None:
    assert m.encode(b"\x00\xff", "raw") == (b"\x00\xff", "application/octet-stream")
    assert m.encode("é", "raw") == ("é".encode(), "application/octet-stream")
    assert m.decode(b"\x00\xff", "raw") == b"\x00\xff"
    with pytest.raises(TypeError):
        m.encode(123, "raw")


@pytest.mark.parametrize("body, reason", [
    (b"", "invalid JSON"),
    (b"{not json", "invalid JSON"),
    (b'{"a": 1} trailing', "invalid JSON"),
    (b'"\xff"', "invalid UTF-8 at byte 1"),
])
def test_undecodable_bodies_raise_with_their_reason(body: bytes, reason: str) -> None:
    with pytest.raises(m.Undecodable) as info:
        m.decode(body, "json")
    assert reason in info.value.reason


def test_a_utf8_bom_is_tolerated() -> None:
    assert m.decode(b'\xef\xbb\xbf{"a":1}', "json") == {"a": 1}


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        m.encode({}, "xml")
    with pytest.raises(ValueError):
        m.decode(b"{}", "xml")


def test_new_messages_are_persistent_with_an_id_and_a_timestamp() -> None:
    props = m.message_properties("application/json", headers={"k": "v"})
    assert props.delivery_mode == 2
    assert len(props.message_id) == 32 and int(props.message_id, 16) >= 0
    assert isinstance(props.timestamp, int) and props.timestamp > 1_600_000_000
    assert props.headers == {"k": "v"}
    assert m.message_properties("x", message_id="given").message_id == "given"


def test_message_id_falls_back_to_a_hash_of_the_body() -> None:
    assert m.message_id_of(pika.BasicProperties(message_id="abc"), b"x") == "abc"
    expected = "sha1:" + hashlib.sha1(b"body").hexdigest()[:16]
    assert m.message_id_of(pika.BasicProperties(), b"body") == expected
    assert m.message_id_of(pika.BasicProperties(message_id=""), b"body") == expected
    assert m.message_id_of(None, b"body") == expected


@pytest.mark.parametrize("headers, attempt", [
    (None, 1), ({}, 1), ({m.ATTEMPT: 3}, 3), ({m.ATTEMPT: "4"}, 4), ({m.ATTEMPT: b"5"}, 5),
    ({m.ATTEMPT: 2.0}, 2), ({m.ATTEMPT: "2.0"}, 2), ({m.ATTEMPT: 0}, 1), ({m.ATTEMPT: -3}, 1),
    ({m.ATTEMPT: "garbage"}, 1), ({m.ATTEMPT: True}, 1), ({m.ATTEMPT: [1]}, 1),
    ({m.ATTEMPT: float("nan")}, 1), ({m.ATTEMPT: "1e400"}, 1), ("not a mapping", 1),
])
def test_attempt_of_is_robust_to_garbage(headers: Any, attempt: int) -> None:
    assert m.attempt_of(headers) == attempt


def test_first_publish_sets_attempt_and_enqueued_at_unless_given() -> None:
    assert m.first_publish_headers(None, now=1000) == {m.ATTEMPT: 1, m.ENQUEUED_AT: 1000}
    given = m.first_publish_headers({m.ATTEMPT: 2, m.ENQUEUED_AT: 5, "k": "v"}, now=1000)
    assert given == {m.ATTEMPT: 2, m.ENQUEUED_AT: 5, "k": "v"}


def test_due_at_rounds_up_to_the_next_millisecond() -> None:
    assert m.due_at_for(1.0, now=1000) == 2000
    assert m.due_at_for(0.0001, now=1000) == 1001


CHAIN_HEADERS: dict[str, Any] = {
    "x-death": [{"queue": "orders.delay.q00", "reason": "expired", "count": 1}],
    "x-first-death-queue": "orders.delay.q00",
    "x-first-death-reason": "expired",
    "x-first-death-exchange": "orders.delay.00",
    "x-delivery-count": 2,
}


def test_retry_headers_count_the_attempt_keep_enqueued_at_and_set_due_at() -> None:
    headers = {m.ATTEMPT: 2, m.ENQUEUED_AT: 500, "k": "v", **CHAIN_HEADERS}
    retried = m.retry_headers(headers, 1.5, now=10_000)
    assert retried == {m.ATTEMPT: 3, m.ENQUEUED_AT: 500, "k": "v",
                       m.FIRST_FAILED_AT: 10_000, m.DUE_AT: 11_500}


def test_retry_headers_keep_the_first_failure_time_and_fall_back_for_enqueued_at() -> None:
    retried = m.retry_headers({m.FIRST_FAILED_AT: 7, m.DUE_AT: 9}, 0, timestamp=3, now=10_000)
    assert retried == {m.ATTEMPT: 2, m.ENQUEUED_AT: 3000, m.FIRST_FAILED_AT: 7}
    assert m.retry_headers(None, 0, now=10_000)[m.ENQUEUED_AT] == 10_000


def test_broker_headers_never_travel_into_a_second_trip_through_the_chain() -> None:
    # RabbitMQ drops a dead-lettered message whose x-death already names its next queue.
    stripped = m.without_broker_headers({**CHAIN_HEADERS, "x-custom": 1})
    assert stripped == {"x-custom": 1}
    assert not set(CHAIN_HEADERS) & set(m.first_publish_headers(CHAIN_HEADERS, now=1))


def failure_from(exc: BaseException) -> m.Failure:
    try:
        raise exc
    except BaseException as caught:
        return m.Failure.from_exception(caught)


class PaymentDeclined(Exception):
    pass


def test_dead_letter_headers_record_the_exception_and_the_attempts() -> None:
    failure = failure_from(PaymentDeclined("card expired"))
    headers = m.dead_letter_headers({m.ATTEMPT: 5, m.ENQUEUED_AT: 1, m.FIRST_FAILED_AT: 100},
                                    failure, queue="orders", now=2000)
    assert headers[m.REASON] == "exception"
    assert headers[m.ERROR_TYPE] == f"{__name__}.PaymentDeclined"
    assert headers[m.ERROR] == "card expired"
    assert "PaymentDeclined: card expired" in headers[m.TRACEBACK]
    assert headers[m.ATTEMPTS] == 5
    assert headers[m.QUEUE] == "orders"
    assert (headers[m.FIRST_FAILED_AT], headers[m.LAST_FAILED_AT]) == (100, 2000)
    assert headers[m.ENQUEUED_AT] == 1


def test_dead_letter_headers_from_a_reason_without_an_exception() -> None:
    headers = m.dead_letter_headers(None, m.Failure(m.REASON_CRASHED, message="killed by SIGKILL"),
                                    queue="orders", attempts=3, now=2000)
    assert headers[m.REASON] == "crashed"
    assert headers[m.ERROR] == "killed by SIGKILL"
    assert headers[m.ATTEMPTS] == 3
    assert headers[m.FIRST_FAILED_AT] == headers[m.LAST_FAILED_AT] == 2000
    assert failure_from(ValueError("x")).error_type == "ValueError"


def test_tracebacks_are_bounded_to_8_kib_keeping_the_tail() -> None:
    text = "é" * 10_000 + "THE END"
    headers = m.dead_letter_headers(None, m.Failure("exception", traceback=text), queue="q")
    kept = headers[m.TRACEBACK]
    assert len(kept.encode("utf-8")) <= 8 * 1024
    assert kept.endswith("THE END") and kept.startswith("[...truncated...]")
    assert m.truncate_tail("short", 8192) == "short"


def test_error_messages_are_bounded_keeping_the_head() -> None:
    kept = m.truncate_head("START" + "x" * 5000, 2048)
    assert kept.startswith("START") and len(kept.encode("utf-8")) <= 2048


def test_reset_headers_forget_the_failure_and_start_again_at_attempt_one() -> None:
    failed = m.dead_letter_headers({m.ATTEMPT: 5, m.ENQUEUED_AT: 1, m.DUE_AT: 9, "k": "v",
                                    **CHAIN_HEADERS},
                                   m.Failure("timeout"), queue="orders", now=2000)
    assert m.reset_headers(failed) == {m.ATTEMPT: 1, m.ENQUEUED_AT: 1, "k": "v"}


def test_failed_message_reads_what_failed_shows() -> None:
    headers = m.dead_letter_headers({m.ATTEMPT: 4}, m.Failure("exception", "KeyError", "'sku'"),
                                    queue="orders", now=2000)
    info = m.FailedMessage.read(pika.BasicProperties(message_id="id1", headers=headers), b"{}")
    assert (info.id, info.reason, info.error_type, info.error, info.attempts) == (
        "id1", "exception", "KeyError", "'sku'", 4)
    assert (info.queue, info.last_failed_at, info.size) == ("orders", 2000, 2)
    bare = m.FailedMessage.read(pika.BasicProperties(), b"x")
    assert bare.id.startswith("sha1:") and bare.attempts == 1 and bare.reason == ""


def test_a_message_the_broker_dead_lettered_shows_the_brokers_reason_and_queue() -> None:
    # x-death as RabbitMQ writes it, newest first (a delivery limit on RabbitMQ 4, after
    # an earlier pass through a delay level).
    headers = {"x-death": [
        {"reason": "delivery_limit", "queue": "orders", "count": 1, "exchange": "",
         "routing-keys": ["orders"]},
        {"reason": "expired", "queue": "orders.delay.3", "count": 1, "exchange": "",
         "routing-keys": ["orders"]},
    ]}
    info = m.FailedMessage.read(pika.BasicProperties(message_id="id2", headers=headers), b"{}")
    assert (info.reason, info.queue, info.error) == ("broker: delivery_limit", "orders", "")
    # A worker's own record wins over the chain's x-death entries.
    ours = m.dead_letter_headers(headers, m.Failure("exception", "KeyError", "'sku'"),
                                 queue="orders", now=2000)
    assert m.FailedMessage.read(pika.BasicProperties(headers=ours), b"{}").reason == "exception"


def test_a_header_value_amqp_cannot_carry_is_republished_as_its_text() -> None:
    # The worker's decoder never produces one; a handler mutating a nested header can.
    headers = {"price": 2.5, "meta": {"bad": {1}}, "n": 2 ** 70, "ok": "x"}
    result, replaced = m.republishable(headers)
    assert result == {"price": 2.5, "meta": "{'bad': {1}}", "n": str(2 ** 70), "ok": "x"}
    assert replaced == ["meta", "n"]
    assert m.republishable({"a": [1.5, None]}) == ({"a": [1.5, None]}, [])


@pytest.mark.parametrize("body", [
    b'O:8:"stdClass":1:{s:5:"order";i:42;}', b'a:2:{i:0;s:1:"a";i:1;s:1:"b";}',
    b's:5:"hello";', b"i:3;", b"d:2.5;", b"b:1;", b"N;",
])
def test_a_php_serialized_body_is_undecodable_with_a_hint(body: bytes) -> None:
    with pytest.raises(m.Undecodable) as caught:
        m.decode(body, "json")
    assert "looks PHP-serialized" in caught.value.reason
    assert "json_encode()" in caught.value.reason
    assert "`format: raw`" in caught.value.reason and "`command:`" in caught.value.reason


@pytest.mark.parametrize("body, hinted", [
    (b"<order id='1'/>", True), (b"hello", True), (b"\x00\x01", True),
    (b"{bad", False), (b"[1,", False), (b"nulll", False), (b"", False), (b"-", False),
])
def test_a_body_that_does_not_start_like_json_gets_the_same_hint(body: bytes,
                                                                hinted: bool) -> None:
    with pytest.raises(m.Undecodable) as caught:
        m.decode(body, "json")
    assert ("does not start like JSON" in caught.value.reason) is hinted
    assert ("`format: raw`" in caught.value.reason) is hinted
