"""The message format: the contract with producers written in any language.

docs/messages.md explains it for people; this module is its single definition in code.
Everything here is pure (no broker I/O), so the worker, the publisher, qsupervisorctl and
the tests all read and write headers the same way.

Times in headers are integers, milliseconds since the Unix epoch: every AMQP client can
write an int, while AMQP timestamps are whole seconds and floats are handled unevenly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pika

from qsupervisor.broker import fieldtable
from qsupervisor.job import DERIVED_ID_PREFIX

# -- body --------------------------------------------------------------------------------

FORMAT_JSON = "json"
FORMAT_RAW = "raw"
FORMATS = (FORMAT_JSON, FORMAT_RAW)
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_RAW = "application/octet-stream"
PERSISTENT = 2  # delivery_mode: written to disk, survives a broker restart

# -- headers producers may set (all optional) ----------------------------------------------

ATTEMPT = "x-qsupervisor-attempt"  # 1-based number of the attempt this delivery is
ENQUEUED_AT = "x-qsupervisor-enqueued-at"  # ms; the FIRST publish, kept across retries
DUE_AT = "x-qsupervisor-due-at"  # ms; a delayed delivery never runs before it

# -- headers the worker sets when it dead-letters a message ---------------------------------

REASON = "x-qsupervisor-reason"
ERROR_TYPE = "x-qsupervisor-error-type"
ERROR = "x-qsupervisor-error"
TRACEBACK = "x-qsupervisor-traceback"
ATTEMPTS = "x-qsupervisor-attempts"  # attempts made
QUEUE = "x-qsupervisor-queue"  # the queue the message failed on
FIRST_FAILED_AT = "x-qsupervisor-first-failed-at"  # ms; set on the first retry already
LAST_FAILED_AT = "x-qsupervisor-last-failed-at"  # ms

REASON_EXCEPTION = "exception"  # the handler raised
REASON_UNDECODABLE = "undecodable"  # the body is not valid JSON / UTF-8
REASON_CRASHED = "crashed"  # the worker died during the job
REASON_TIMEOUT = "timeout"  # the job ran past the program's timeout
REASON_EXIT = "exit"  # a program's command exited non-zero, or was killed by a signal
REASONS = (REASON_EXCEPTION, REASON_UNDECODABLE, REASON_CRASHED, REASON_TIMEOUT, REASON_EXIT)

FAILURE_HEADERS = (REASON, ERROR_TYPE, ERROR, TRACEBACK, ATTEMPTS, QUEUE,
                   FIRST_FAILED_AT, LAST_FAILED_AT)

# A header frame must fit in one AMQP frame (128 KiB by default), and an operator reads
# the end of a traceback first: keep its tail. The error message's head is what matters.
MAX_TRACEBACK_BYTES = 8 * 1024
MAX_ERROR_BYTES = 2 * 1024
_TRUNCATED = "[...truncated...]\n"

# Headers the broker owns, which a republished copy must not carry:
# - x-death and friends, added at every level of our delay chain: RabbitMQ treats a
#   message whose x-death already names the queue it is being dead-lettered to as a cycle
#   and DROPS it, silently, so a retry carrying them would vanish in the chain;
# - x-delivery-count, set by quorum queues: a stale copy would look like redeliveries to
#   the worker's crash detection.
DELIVERY_COUNT = "x-delivery-count"
_BROKER_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", DELIVERY_COUNT)


class Undecodable(Exception):
    """A body that cannot be decoded in the program's format; dead-lettered at once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def now_ms() -> int:
    return int(time.time() * 1000)


def new_message_id() -> str:
    return uuid.uuid4().hex


# -- encoding --------------------------------------------------------------------------------


def encode(payload: Any, fmt: str = FORMAT_JSON) -> tuple[bytes, str]:
    """(body, content_type) for `payload`: JSON text in UTF-8, or the bytes as they are."""
    if fmt == FORMAT_JSON:
        # allow_nan=False: NaN and Infinity are not JSON, and a PHP or Java consumer of the
        # same queue would choke on them.
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8"), CONTENT_TYPE_JSON
    if fmt == FORMAT_RAW:
        if isinstance(payload, str):
            return payload.encode("utf-8"), CONTENT_TYPE_RAW
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return bytes(payload), CONTENT_TYPE_RAW
        raise TypeError(f"format raw publishes bytes or str, got {type(payload).__name__}")
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")


def decode(body: bytes, fmt: str = FORMAT_JSON) -> Any:
    """The payload a handler receives; raise Undecodable for a body that is not valid."""
    if fmt == FORMAT_RAW:
        return body
    if fmt != FORMAT_JSON:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    try:
        # utf-8-sig: a BOM is not valid JSON, but some Windows-born producers add one and
        # it carries no meaning; refusing it would dead-letter good messages.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Undecodable(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise Undecodable(f"invalid JSON: {exc.msg} at {where}{_not_json_hint(text)}") from None
    except RecursionError:
        raise Undecodable("invalid JSON: nested too deeply") from None


# What PHP's serialize() writes: a:2:{...}, O:8:"stdClass":1:{...}, s:5:"hello";, i:3;,
# d:2.5;, b:1;, N;. A PHP producer that forgot json_encode() is the usual undecodable body.
_PHP_SERIALIZED = re.compile(r"(?:[aOCs]:\d+:|[idb]:-?[\d.eE+-]+;|N;)")
_JSON_STARTS = frozenset('{["-0123456789')
_JSON_WORDS = ("true", "false", "null")
_RAW_HINT = "give the program `format: raw` (its handler gets the bytes) or a `command:`"


def _not_json_hint(text: str) -> str:
    """What the operator should do about a body that was never meant to be JSON."""
    stripped = text.lstrip()
    if _PHP_SERIALIZED.match(stripped):
        return ("; the body looks PHP-serialized (serialize()): send json_encode() output, "
                f"or {_RAW_HINT}")
    word = re.match(r"[A-Za-z]*", stripped)
    if stripped and stripped[0] not in _JSON_STARTS and (
            not word or not word.group().startswith(_JSON_WORDS)):
        return (f"; the body does not start like JSON (it starts with {stripped[:1]!r}): "
                f"send JSON, or {_RAW_HINT}")
    return ""


def message_properties(content_type: str, *, message_id: str | None = None,
                       headers: Mapping[str, Any] | None = None,
                       priority: int | None = None) -> pika.BasicProperties:
    """Properties of a new message: persistent, with an id and a timestamp."""
    return pika.BasicProperties(
        content_type=content_type,
        delivery_mode=PERSISTENT,
        priority=priority,
        message_id=message_id or new_message_id(),
        timestamp=int(time.time()),
        headers=dict(headers or {}),
    )


def message_id_of(properties: Any, body: bytes) -> str:
    """The message's id, or one derived from its body so operators can still name it."""
    message_id = getattr(properties, "message_id", None)
    if isinstance(message_id, str) and message_id:
        return message_id
    return DERIVED_ID_PREFIX + hashlib.sha1(body).hexdigest()[:16]


# -- reading headers ------------------------------------------------------------------------


def int_header(headers: Mapping[str, Any] | None, name: str) -> int | None:
    """The header as an int, or None when absent or not a whole number.

    Producers in other languages send numbers as strings or floats more often than not,
    and pika hands back undecodable strings as bytes: accept all of those.
    """
    # A plain dict first: pika hands headers over as one, and the check of typing's Mapping
    # costs microseconds on every message.
    value = headers.get(name) if type(headers) is dict or isinstance(headers, Mapping) else None
    if type(value) is int:
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def attempt_of(headers: Mapping[str, Any] | None) -> int:
    """The 1-based attempt number this delivery is; absent or garbage means 1."""
    attempt = int_header(headers, ATTEMPT)
    return attempt if attempt is not None and attempt >= 1 else 1


def enqueued_at_of(headers: Mapping[str, Any] | None) -> int | None:
    return int_header(headers, ENQUEUED_AT)


def due_at_of(headers: Mapping[str, Any] | None) -> int | None:
    return int_header(headers, DUE_AT)


def text_header(headers: Mapping[str, Any] | None, name: str) -> str:
    value = headers.get(name) if isinstance(headers, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# -- writing headers -------------------------------------------------------------------------


def without_broker_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy without x-death and x-delivery-count (see _BROKER_HEADER_PREFIXES for why)."""
    return {key: value for key, value in (headers or {}).items()
            if not key.startswith(_BROKER_HEADER_PREFIXES)}


def first_publish_headers(headers: Mapping[str, Any] | None, *,
                          now: int | None = None) -> dict[str, Any]:
    """Headers of a new message: attempt 1 and enqueued-at now, unless the caller set them."""
    result = without_broker_headers(headers)
    result.setdefault(ATTEMPT, 1)
    result.setdefault(ENQUEUED_AT, now_ms() if now is None else now)
    return result


def due_at_for(delay: float, *, now: int | None = None) -> int:
    """The due time of a message delayed by `delay` seconds; rounded up, never early."""
    return (now_ms() if now is None else now) + math.ceil(delay * 1000)


def retry_headers(headers: Mapping[str, Any] | None, delay: float, *,
                  timestamp: int | None = None, now: int | None = None) -> dict[str, Any]:
    """Headers of the republished copy of a message that failed and will be retried.

    The attempt goes up by one; enqueued-at is kept (falling back to the message's AMQP
    `timestamp`, in seconds, for producers that did not set it); first-failed-at is set
    on the first failure so the dead-letter headers can report it after the last one.
    """
    now = now_ms() if now is None else now
    result = without_broker_headers(headers)
    result[ATTEMPT] = attempt_of(headers) + 1
    if enqueued_at_of(headers) is None:
        result[ENQUEUED_AT] = timestamp * 1000 if timestamp else now
    if int_header(headers, FIRST_FAILED_AT) is None:
        result[FIRST_FAILED_AT] = now
    if delay > 0:
        result[DUE_AT] = due_at_for(delay, now=now)
    else:
        result.pop(DUE_AT, None)
    return result


@dataclass(frozen=True)
class Failure:
    """Why a message is dead-lettered, in the shape of the dead-letter headers."""

    reason: str  # one of REASONS
    error_type: str = ""
    message: str = ""
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, reason: str = REASON_EXCEPTION) -> Failure:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return cls(reason, error_type_name(exc), str(exc), "".join(lines))


def error_type_name(exc: BaseException) -> str:
    """'ValueError' for builtins, 'package.module.Error' otherwise: enough to find it."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def dead_letter_headers(headers: Mapping[str, Any] | None, failure: Failure, *, queue: str,
                        attempts: int | None = None,
                        now: int | None = None) -> dict[str, Any]:
    """Headers of the copy published to the dead-letter queue.

    The message's own headers are kept (including x-death, which tells an operator
    which delay levels it went through), then the failure is recorded over them.
    """
    now = now_ms() if now is None else now
    result = dict(headers or {})
    first_failed = int_header(headers, FIRST_FAILED_AT)
    result.update({
        REASON: failure.reason,
        ERROR_TYPE: failure.error_type,
        ERROR: truncate_head(failure.message, MAX_ERROR_BYTES),
        TRACEBACK: truncate_tail(failure.traceback, MAX_TRACEBACK_BYTES),
        ATTEMPTS: attempt_of(headers) if attempts is None else attempts,
        QUEUE: queue,
        FIRST_FAILED_AT: first_failed if first_failed is not None else now,
        LAST_FAILED_AT: now,
    })
    return result


def republishable(headers: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`headers` with each value AMQP cannot carry replaced by its repr(), and the names
    of those replaced.

    What the worker decodes it can always encode again (broker/fieldtable.py), but a
    handler may have put something into a nested header it was given (Job.headers is a
    shallow copy). The retry or dead letter must still go out: a copy that cannot be
    encoded would leave its message unacked in the worker for good.
    """
    result: dict[str, Any] = {}
    replaced: list[str] = []
    for name, value in headers.items():
        try:
            fieldtable.encode_value([], value)
        except fieldtable.UnencodableValue:
            value = repr(value)
            replaced.append(str(name))
        result[name] = value
    return result, replaced


def reset_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers for a dead-lettered message sent back to its queue (retry-failed): the
    failure record and any due time removed, attempt 1 again; enqueued-at is kept."""
    result = without_broker_headers(headers)
    for name in FAILURE_HEADERS + (DUE_AT,):
        result.pop(name, None)
    result[ATTEMPT] = 1
    return result


def truncate_tail(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes, keeping its end."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    keep = limit - len(_TRUNCATED.encode("utf-8"))
    # errors="ignore" drops the partial character the cut may have left at the start.
    return _TRUNCATED + data[-keep:].decode("utf-8", "ignore")


def truncate_head(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes, keeping its start."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = " [...truncated]"
    keep = limit - len(marker.encode("utf-8"))
    return data[:keep].decode("utf-8", "ignore") + marker


# -- reading a dead-lettered message ----------------------------------------------------------


def _latest_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The newest x-death entry (RabbitMQ puts it first), or None."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return None


@dataclass(frozen=True)
class FailedMessage:
    """What `qsupervisorctl failed` shows of a dead-lettered message."""

    id: str
    reason: str
    error_type: str
    error: str
    attempts: int
    queue: str
    first_failed_at: int | None  # ms
    last_failed_at: int | None  # ms
    enqueued_at: int | None  # ms
    size: int  # body bytes

    @classmethod
    def read(cls, properties: Any, body: bytes) -> FailedMessage:
        headers = getattr(properties, "headers", None) or {}
        attempts = int_header(headers, ATTEMPTS)
        reason, queue = text_header(headers, REASON), text_header(headers, QUEUE)
        if not reason:
            # Dead-lettered by the broker, not by a worker (a queue policy's delivery limit
            # or TTL): its x-death entry says why and from where.
            death = _latest_death(headers)
            reason = f"broker: {text_header(death, 'reason')}" if death else ""
            queue = queue or text_header(death, "queue")
        return cls(
            id=message_id_of(properties, body),
            reason=reason,
            error_type=text_header(headers, ERROR_TYPE),
            error=text_header(headers, ERROR),
            attempts=attempts if attempts is not None else attempt_of(headers),
            queue=queue,
            first_failed_at=int_header(headers, FIRST_FAILED_AT),
            last_failed_at=int_header(headers, LAST_FAILED_AT),
            enqueued_at=enqueued_at_of(headers),
            size=len(body),
        )
