"""The dead-letter queue seen by an operator: look at it, send messages back, empty it.

These work with basic.get and manual acks, on a channel of their own, so they are safe
next to running workers: a message is only ever removed from the dead-letter queue after
its copy in the program's queue has been confirmed.

Looking must not use a dead letter up. A quorum queue counts every return towards its
delivery limit (RabbitMQ 4.0 - 4.2 count a nack too; see returns.py), so what was looked at
goes back with one basic.nack only where that count cannot reach a limit: the dead-letter
queue qsupervisor declares has none. On one declared by an earlier release (`refresh`),
a message already returned REFRESH_AT times goes back as a fresh copy instead.
"""

from __future__ import annotations

import copy
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, NamedTuple

import pika
import pika.exceptions

from qsupervisor.broker import messages, returns
from qsupervisor.broker.messages import FailedMessage
from qsupervisor.broker.publisher import PublishError, UnencodableMessage, publish_to_queue
from qsupervisor.broker.topology import ChannelFactory, queue_depth


class Held(NamedTuple):
    """A message taken with basic.get and not yet settled."""

    tag: int
    properties: Any
    body: bytes


def peek(channel_factory: ChannelFactory, queue: str, limit: int,
         refresh: bool = False) -> list[FailedMessage]:
    """Up to `limit` messages from the head of `queue`, left in the queue (see the module's
    docstring for `refresh`)."""
    if refresh:
        # No more than were there: a refreshed copy joins the tail and must not be seen twice.
        depth = queue_depth(channel_factory, queue)
        limit = min(limit, depth[0] if depth else 0)
    channel = channel_factory()
    found: list[FailedMessage] = []
    held: list[Held] = []
    try:
        if refresh:
            channel.confirm_delivery()
        while len(found) < limit:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            held.append(Held(method.delivery_tag, properties, body))
            found.append(FailedMessage.read(properties, body))
        give_back(channel, queue, held, refresh)
    finally:
        # Closing the channel returns whatever give_back could not (counted, but kept).
        if channel.is_open:
            channel.close()
    return found


def give_back(channel: Any, queue: str, held: list[Held], refresh: bool) -> None:
    """Return messages looked at and not moved, in their order, with one basic.nack; with
    `refresh` (the channel then in confirm mode), those near a delivery limit as copies."""
    last_tag = 0
    try:
        for message in held:
            if refresh and returns.delivery_count(message.properties) >= returns.REFRESH_AT:
                try:
                    returns.return_as_copy(channel, channel, queue, message.tag,
                                           message.properties, message.body)
                    continue
                except PublishError:
                    if not channel.is_open:
                        return
            last_tag = max(last_tag, message.tag)
        if last_tag:
            channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
    except (pika.exceptions.AMQPError, OSError):
        pass  # the channel is going: closing it returns the rest


@dataclass(frozen=True)
class RetryResult:
    moved: tuple[str, ...]  # message ids, in the order they were moved
    not_found: tuple[str, ...]  # requested ids that were not in the dead-letter queue
    # Why messages were not moved: a copy the broker refused (moving stopped there), or
    # copies that could not be encoded (those stay, the others were moved).
    error: str = ""


def retry(channel: Any, dead_letter_queue: str, queue: str,
          ids: AbstractSet[str] | None, limit: int, refresh: bool = False) -> RetryResult:
    """Move messages from `dead_letter_queue` back to `queue`, attempts reset.

    `ids` None moves every message; otherwise the first message with each id. At most
    `limit` messages are looked at (the depth when the command started), so messages
    dead-lettered meanwhile do not keep it going. `channel` must be in confirm mode: each
    copy is confirmed by the broker before its original is acked, so a crash in between
    leaves a duplicate, never a loss. The messages looked at and not moved are given
    back as `peek` gives them back.
    """
    moved: list[str] = []
    refused: list[str] = []  # messages whose copy could not be encoded, and why
    skipped: list[Held] = []
    wanted = set(ids) if ids is not None else None
    try:
        for _ in range(limit):
            if wanted is not None and not wanted:
                break
            method, properties, body = channel.basic_get(dead_letter_queue, auto_ack=False)
            if method is None:
                break
            message_id = messages.message_id_of(properties, body)
            if wanted is not None and message_id not in wanted:
                skipped.append(Held(method.delivery_tag, properties, body))
                continue
            try:
                publish_to_queue(channel, queue, body, retry_properties(properties))
            except UnencodableMessage as exc:  # nothing was sent: it stays, the rest move
                skipped.append(Held(method.delivery_tag, properties, body))
                refused.append(f"{message_id}: {exc}")
                if wanted is not None:
                    wanted.discard(message_id)
                continue
            except PublishError as exc:  # the original stays in the dead-letter queue
                return RetryResult(tuple(moved), (), "; ".join(refused + [str(exc)]))
            channel.basic_ack(method.delivery_tag)
            moved.append(message_id)
            if wanted is not None:
                wanted.discard(message_id)
    finally:
        if channel.is_open:
            give_back(channel, dead_letter_queue, skipped, refresh)
    not_found = tuple(sorted(wanted)) if wanted else ()
    return RetryResult(tuple(moved), not_found, "; ".join(refused))


def retry_properties(properties: pika.BasicProperties) -> pika.BasicProperties:
    """The original's properties with the failure forgotten: attempt 1, no failure headers."""
    result = copy.copy(properties)
    result.headers = messages.reset_headers(properties.headers)
    result.delivery_mode = messages.PERSISTENT
    # The broker refuses (and closes the channel on) a user_id other than the publishing
    # login; the producer's user_id is stale here, and the message is ours to republish.
    result.user_id = None
    return result


def purge(channel_factory: ChannelFactory, queue: str) -> int | None:
    """Empty `queue`; the number of messages removed, or None if it does not exist."""
    if queue_depth(channel_factory, queue) is None:
        return None
    channel = channel_factory()
    try:
        return int(channel.queue_purge(queue).method.message_count)
    finally:
        if channel.is_open:
            channel.close()
