"""The dead-letter queue seen by an operator: look at it, send messages back, empty it.

These work with basic.get and manual acks, on a channel of their own, so they are safe
next to running workers: a message is only ever removed from the dead-letter queue after
its copy in the program's queue has been confirmed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, AbstractSet, List, Optional, Tuple

import pika
import pika.exceptions

from qsupervisor.broker import messages
from qsupervisor.broker.messages import FailedMessage
from qsupervisor.broker.publisher import PublishError, publish_to_queue
from qsupervisor.broker.topology import ChannelFactory, queue_depth


def peek(channel_factory: ChannelFactory, queue: str, limit: int) -> List[FailedMessage]:
    """Up to `limit` messages from the head of `queue`, left in the queue."""
    channel = channel_factory()
    found: List[FailedMessage] = []
    last_tag = 0
    try:
        while len(found) < limit:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            last_tag = method.delivery_tag
            found.append(FailedMessage.read(properties, body))
    finally:
        # Hand every message back where it was (the order is preserved) with one
        # basic.nack, not by closing the channel: RabbitMQ 4 quorum queues drop a message
        # returned more times than their delivery limit (20 by default), and from 4.3 a
        # nack is not counted as a failed delivery, so looking at dead letters never uses
        # them up. Closing the channel still returns them if the nack cannot be sent.
        if channel.is_open:
            if last_tag:
                try:
                    channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
                except (pika.exceptions.AMQPError, OSError):
                    pass
            channel.close()
    return found


@dataclass(frozen=True)
class RetryResult:
    moved: Tuple[str, ...]  # message ids, in the order they were moved
    not_found: Tuple[str, ...]  # requested ids that were not in the dead-letter queue
    error: str = ""  # why moving stopped early (a publish the broker refused), if it did


def retry(channel: Any, dead_letter_queue: str, queue: str,
          ids: Optional[AbstractSet[str]], limit: int) -> RetryResult:
    """Move messages from `dead_letter_queue` back to `queue`, attempts reset.

    `ids` None moves every message; otherwise the first message with each id. At most
    `limit` messages are looked at (the depth when the command started), so messages
    dead-lettered meanwhile do not keep it going. `channel` must be in confirm mode: each
    copy is confirmed by the broker before its original is acked, so a crash in between
    leaves a duplicate, never a loss. The caller closes the channel, which hands back
    the messages that were looked at and not moved.
    """
    moved: List[str] = []
    wanted = set(ids) if ids is not None else None
    for _ in range(limit):
        if wanted is not None and not wanted:
            break
        method, properties, body = channel.basic_get(dead_letter_queue, auto_ack=False)
        if method is None:
            break
        message_id = messages.message_id_of(properties, body)
        if wanted is not None and message_id not in wanted:
            continue  # stays unacked until the channel closes, then goes back
        try:
            publish_to_queue(channel, queue, body, retry_properties(properties))
        except PublishError as exc:  # the original stays in the dead-letter queue
            return RetryResult(tuple(moved), (), str(exc))
        channel.basic_ack(method.delivery_tag)
        moved.append(message_id)
        if wanted is not None:
            wanted.discard(message_id)
    not_found = tuple(sorted(wanted)) if wanted else ()
    return RetryResult(tuple(moved), not_found)


def retry_properties(properties: pika.BasicProperties) -> pika.BasicProperties:
    """The original's properties with the failure forgotten: attempt 1, no failure headers."""
    result = copy.copy(properties)
    result.headers = messages.reset_headers(properties.headers)
    result.delivery_mode = messages.PERSISTENT
    # The broker refuses (and closes the channel on) a user_id other than the publishing
    # login; the producer's user_id is stale here, and the message is ours to republish.
    result.user_id = None
    return result


def purge(channel_factory: ChannelFactory, queue: str) -> Optional[int]:
    """Empty `queue`; the number of messages removed, or None if it does not exist."""
    if queue_depth(channel_factory, queue) is None:
        return None
    channel = channel_factory()
    try:
        return int(channel.queue_purge(queue).method.message_count)
    finally:
        if channel.is_open:
            channel.close()
