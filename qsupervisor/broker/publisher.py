"""Publishing with publisher confirms and the mandatory flag: a message the broker did not
take (nothing bound to route it, or nacked) raises PublishError instead of vanishing.

`publish_to_queue` and `publish_delayed` work on any channel in confirm mode; the worker
reuses them on its own channel for retries and dead-lettering. `Publisher` wraps one
connection and one channel for producers, and `publish` is the one-call form.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pika
import pika.exceptions

from qsupervisor.broker import fieldtable, messages
from qsupervisor.broker.connection import (
    BrokerNodes,
    BrokerUnreachable,
    BrokerUrls,
    display_url,
    resolve,
    where,
)
from qsupervisor.broker.delays import DelayChain
from qsupervisor.config.model import DelayConfig


class PublishError(Exception):
    """The message was not (or may not have been) accepted by the broker."""


class UnencodableMessage(PublishError, ValueError):
    """A header or property AMQP cannot carry. Raised before anything is sent, so the
    connection and channel stay usable; a ValueError too, as it is the caller's mistake."""


# Properties that are AMQP short strings: at most 255 bytes in UTF-8.
_SHORT_STRINGS = ("content_type", "content_encoding", "correlation_id", "reply_to",
                  "expiration", "message_id", "type", "user_id", "app_id", "cluster_id")
MAX_PRIORITY = 255  # an AMQP octet; RabbitMQ honours at most the queue's x-max-priority


def check_encodable(properties: pika.BasicProperties, exchange: str = "",
                    routing_key: str = "") -> None:
    """UnencodableMessage naming what cannot be sent; nothing if all of it can.

    pika finds out only while it writes the frames, as an AMQPError that reads like a
    lost connection (and that callers treat as one, closing it): check first.
    """
    try:
        fieldtable.check_table(properties.headers, "headers")
    except fieldtable.UnencodableValue as exc:
        raise UnencodableMessage(f"cannot publish: {exc}") from None
    texts = [(name, getattr(properties, name, None)) for name in _SHORT_STRINGS]
    texts += [("exchange", exchange), ("routing key", routing_key)]
    for name, value in texts:
        if value is None:
            continue
        if not isinstance(value, str):
            raise UnencodableMessage(f"cannot publish: {name} must be a string, "
                                     f"not {type(value).__name__}")
        if len(value.encode("utf-8")) > fieldtable.MAX_SHORT_STRING:
            raise UnencodableMessage(f"cannot publish: {name} is at most "
                                     f"{fieldtable.MAX_SHORT_STRING} bytes in UTF-8")
    for name, limit in (("priority", MAX_PRIORITY), ("delivery_mode", 2),
                        ("timestamp", (1 << 64) - 1)):
        value = getattr(properties, name, None)
        if value is not None and (type(value) is not int or not 0 <= value <= limit):
            raise UnencodableMessage(f"cannot publish: {name} must be a whole number "
                                     f"from 0 to {limit}, got {value!r}")


# -- on a channel the caller owns --------------------------------------------------------------


def publish_to_queue(channel: Any, queue: str, body: bytes,
                     properties: pika.BasicProperties, *, where: str = "") -> None:
    """Publish straight to `queue` through the default exchange; return once confirmed.

    `channel` must be in confirm mode (confirm_delivery), or a lost message goes unseen.
    Connection errors propagate as pika raises them: the caller owns the connection.
    `where` names the broker in errors (connection.where), when the caller knows it.
    """
    hint = (f"queue '{queue}' does not exist{_in(where)}; it is declared when its program "
            "starts (or by `qsupervisorctl publish`)")
    _publish(channel, "", queue, body, properties, hint, where)


def publish_delayed(channel: Any, chain: DelayChain, body: bytes,
                    properties: pika.BasicProperties, delay: float, *,
                    where: str = "") -> None:
    """Publish into `chain` so the message reaches chain.queue after `delay` seconds
    (a delay of zero or less publishes straight to chain.queue).

    Works on a copy of `properties`: sets x-qsupervisor-due-at and removes the broker's
    own headers (x-death from an earlier trip through the chain would get the message
    dropped by RabbitMQ's dead-letter cycle detection). ValueError if `delay` is longer
    than the chain holds. `channel` must be in confirm mode, as for publish_to_queue.
    """
    routing_key = chain.routing_key(delay)  # first: a delay too long is the caller's error
    props = copy.copy(properties)
    props.headers = messages.without_broker_headers(properties.headers)
    if chain.units(delay) == 0:
        props.headers.pop(messages.DUE_AT, None)
        publish_to_queue(channel, chain.queue, body, props, where=where)
        return
    props.headers[messages.DUE_AT] = messages.due_at_for(delay)
    hint = (f"the delay chain '{chain.exchange}' is not bound to queue '{chain.queue}'"
            f"{_in(where)}; it is declared when the program starts")
    _publish(channel, chain.exchange, routing_key, body, props, hint, where)


def _in(where: str) -> str:
    return f" in {where}" if where else ""


def _publish(channel: Any, exchange: str, routing_key: str, body: bytes,
             properties: pika.BasicProperties, hint: str, where: str = "") -> None:
    check_encodable(properties, exchange, routing_key)  # before a byte is written
    message_id = messages.message_id_of(properties, body)
    target = f"exchange '{exchange}'" if exchange else f"queue '{routing_key}'"
    try:
        channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
    except pika.exceptions.UnroutableError:
        raise PublishError(
            f"message {message_id} was returned unroutable by {target}: {hint}") from None
    except pika.exceptions.NackError:
        raise PublishError(f"the broker refused message {message_id} for {target} (nack); "
                           "it may be out of disk or memory, or the queue is full") from None
    except pika.exceptions.ChannelClosedByBroker as exc:
        # e.g. 404 for a missing exchange. The channel is gone; the caller must open another.
        raise PublishError(f"cannot publish message {message_id} to {target}{_in(where)}: "
                           f"{exc.reply_code} {exc.reply_text}") from exc


# -- a producer's own connection ------------------------------------------------------------------


class Publisher:
    """One connection and one confirm-mode channel, reused across publishes.

    Not thread-safe, like the pika BlockingConnection inside it: use one per thread.
    After a lost connection the next publish reconnects, to the next node of a cluster
    when `broker_url` lists several. `delay` must match the daemon's `delay:` settings:
    the routing key of a delayed message depends on the resolution.
    """

    def __init__(self, broker_url: BrokerUrls | None = None, *,
                 delay: DelayConfig | None = None, name: str = "qsupervisor publisher") -> None:
        # Checked as the configuration checks `broker:`: an http:// URL is a ValueError here.
        urls, self._origin = resolve(broker_url)  # none: $QSUPERVISOR_BROKER, else local
        self._nodes = BrokerNodes(urls)
        self._url = self._nodes.urls[0]  # the node of the current or last connection
        self._delay = delay if delay is not None else DelayConfig()
        self._name = name
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._open_channel()  # now, so a wrong URL fails here rather than at the first publish

    def publish(self, queue: str, payload: Any, *, delay: float | None = None,
                headers: Mapping[str, Any] | None = None, message_id: str | None = None,
                format: str | None = None, priority: int | None = None,
                delay_exchange: str | None = None, content_type: str | None = None,
                fmt: str | None = None) -> str:
        """Publish `payload` to `queue`, now or after `delay` seconds; return its message id.

        `format` is the program's: "json" (the default) or "raw" (bytes or str, sent as
        they are); `fmt` is its older name. `priority` is 0 to 255 (the broker honours it
        up to the queue's x-max-priority). `delay_exchange` defaults to "<queue>.delay", as
        in the configuration. Everything is checked before anything is sent: a value AMQP
        cannot carry is an UnencodableMessage (a ValueError and a PublishError), and the
        connection stays open.
        """
        if format is not None and fmt is not None and format != fmt:
            raise ValueError(f"format={format!r} and fmt={fmt!r} disagree; pass format only")
        body, default_type = messages.encode(payload, format or fmt or messages.FORMAT_JSON)
        properties = messages.message_properties(
            content_type or default_type, message_id=message_id, priority=priority,
            headers=messages.first_publish_headers(headers))
        chain = DelayChain(delay_exchange or f"{queue}.delay", queue,
                           self._delay.resolution, self._delay.levels)
        chain.routing_key(delay or 0.0)  # a delay too long is a ValueError, before any I/O
        check_encodable(properties, chain.exchange, queue)  # also before any I/O
        channel = self._open_channel()
        try:
            # No delay (None, 0, negative) goes straight to the queue's default binding.
            publish_delayed(channel, chain, body, properties, delay or 0.0,
                            where=where(self._url, self._origin))
        except PublishError:
            if not channel.is_open:
                self._channel = None
            raise
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            self._nodes.demote(self._url)
            raise PublishError(
                f"lost the connection to {display_url(self._url)} while publishing message "
                f"{properties.message_id}; it may or may not have been published: {exc!r}") from exc
        return str(properties.message_id)

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass  # closing a connection that is already going away

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_channel(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        try:
            if self._connection is None or not self._connection.is_open:
                self._connection, self._url = self._nodes.connect(name=self._name)
            channel = self._connection.channel()
            channel.confirm_delivery()
        except BrokerUnreachable as exc:
            raise PublishError(str(exc)) from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise PublishError(
                f"cannot open a channel on {display_url(self._url)}: {exc!r}") from exc
        self._channel = channel
        return channel


def publish(queue: str, payload: Any, *, delay: float | None = None,
            headers: Mapping[str, Any] | None = None, broker: BrokerUrls | None = None,
            format: str | None = None, message_id: str | None = None,
            priority: int | None = None) -> str:
    """Publish one message with a short-lived connection; return its message id.

    `broker` is one URL or a list (the nodes of one cluster: the first that answers is
    used); it defaults to $QSUPERVISOR_BROKER (one URL, or several separated by spaces or
    commas), else amqp://guest:guest@127.0.0.1:5672/%2F. The other arguments are
    Publisher.publish's. For many messages, keep a Publisher instead: a connection per
    message is slow.
    """
    with Publisher(broker) as publisher:
        return publisher.publish(queue, payload, delay=delay, headers=headers, format=format,
                                 message_id=message_id, priority=priority)
