"""Giving a message back to its queue without using up its delivery limit.

A quorum queue counts the times a message goes back to it (`x-delivery-count`) and, past
its delivery limit, dead-letters or drops it. RabbitMQ 4.0 sets that limit to 20 on every
quorum queue, and what counts changed between versions (measured on 3.10.8 and 4.0.5;
4.3 from rabbitmq-server#15387):

| return                              | 3.x       | 4.0 - 4.2 | 4.3 and later |
|-------------------------------------|-----------|-----------|---------------|
| basic.nack, requeue                 | counts    | counts    | free          |
| basic.reject, requeue               | counts    | counts    | counts        |
| channel or connection closed        | counts    | counts    | counts        |

3.x counts too, but sets no limit unless a policy or argument does.

qsupervisor gives messages back when nothing went wrong with them: a stopping worker's
prefetched messages it never started, a dead letter that `failed` only looked at. Such a
return must never count, so where a nack would, the message goes back as a copy instead:
published (confirmed) to the same queue, then the original acknowledged. The copy is a
new message to the broker, with a count of zero; it keeps the body, the properties and
every header but the count, and it joins the tail of the queue instead of the head.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from qsupervisor.broker import messages, publisher

QUORUM = "quorum"
# The first release whose basic.nack with requeue leaves x-delivery-count as it is.
NACK_FREE_SINCE = (4, 3)

Version = tuple[int, ...]
# The release number at the start of a version string: what follows ("-rc.1", "+5.g1234")
# is not part of it.
_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def broker_version(connection: Any) -> Version | None:
    """The RabbitMQ version a pika connection talks to, from its connection.start; None
    when the server does not say (or says something that is not a version)."""
    impl = getattr(connection, "_impl", connection)
    properties = getattr(impl, "server_properties", None) or {}
    return parse_version(properties.get("version"))


def parse_version(value: Any) -> Version | None:
    """(4, 0, 5) from "4.0.5" (or b"4.0.5", "4.1.0-rc.1", "3.13.7+5.g1234"); None if none."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    match = _RELEASE.match(value) if isinstance(value, str) else None
    return tuple(int(n) for n in match.group().split(".")) if match else None


def nack_is_free(queue_type: str, version: Version | None) -> bool:
    """True when basic.nack with requeue gives a message back without counting towards
    its delivery limit: on a classic queue (it has none), or a quorum queue from 4.3 on.
    An unknown version is taken to count: a copy is always safe, a counted nack is not."""
    if queue_type != QUORUM:
        return True
    return version is not None and version >= NACK_FREE_SINCE


# A message given back this many times already (x-delivery-count) to a queue that may
# have a delivery limit goes back as a copy, even where a nack would do: half of RabbitMQ
# 4's default limit of 20, so that returns nobody controls (a dropped connection) still
# leave room.
REFRESH_AT = 10


def delivery_count(properties: Any) -> int:
    """The broker's count of the message's returns (quorum queues); 0 when not given."""
    return messages.int_header(getattr(properties, "headers", None), messages.DELIVERY_COUNT) or 0


def copy_properties(properties: Any) -> Any:
    """The properties of a message's returned copy: the same, without the broker's count
    (the broker adds it again on the copy's next return; a stale one would mislead), and
    without user_id, which the broker refuses (closing the channel) unless it names the
    login that publishes: the producer's, not ours."""
    result = copy.copy(properties)
    result.user_id = None
    result.headers = {key: value for key, value in (properties.headers or {}).items()
                      if key != messages.DELIVERY_COUNT}
    return result


def return_as_copy(confirm_channel: Any, ack_channel: Any, queue: str, tag: int,
                   properties: Any, body: bytes) -> None:
    """Put a copy of a message held unacked on `ack_channel` back on `queue`, then ack the
    original. `confirm_channel` is in confirm mode: the original is acked only once the
    broker has the copy, so a failure in between leaves two, never none. Raises
    publisher.PublishError (nothing acked) when the broker refuses the copy."""
    publisher.publish_to_queue(confirm_channel, queue, body, copy_properties(properties))
    ack_channel.basic_ack(tag)
