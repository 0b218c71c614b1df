"""Opening a blocking connection to one of a cluster's nodes, and naming a broker without
leaking its password."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from typing import Callable, Union
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectorException,
    AMQPConnectorStackTimeout,
)

from qsupervisor.config import brokerurl

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
BROKER_ENV = "QSUPERVISOR_BROKER"
# A short-lived tool must not hang forever on a broker that blocks publishers (memory or
# disk alarm); long-running users pass their own value in the URL.
DEFAULT_BLOCKED_TIMEOUT = 30.0
# Several URLs in $QSUPERVISOR_BROKER: separated by white space, or by commas before the
# next scheme (a comma inside a URL, in a password say, is left alone).
_URL_SEPARATOR = re.compile(r"\s+|,\s*(?=amqps?://)")

# One URL, or the nodes of one cluster.
BrokerUrls = Union[str, Sequence[str]]


class BrokerUnreachable(Exception):
    """No node could be connected to; the message names each, passwords left out."""


def default_broker() -> tuple[str, ...]:
    """$QSUPERVISOR_BROKER (one URL, or several), else the local broker."""
    return split_urls(os.environ.get(BROKER_ENV, "")) or (DEFAULT_BROKER,)


# Where a Python caller's broker URLs came from, for errors that depend on it (a queue
# missing from the virtual host of a URL the caller never meant to use).
FROM_ARGUMENT = "the broker argument"
FROM_ENVIRONMENT = f"${BROKER_ENV}"
FROM_DEFAULT = "the built-in default"


def resolve(broker: BrokerUrls | None) -> tuple[tuple[str, ...], str]:
    """(the URLs, where they came from) for a URL, a list, or None/empty for the default;
    ValueError, worded as the configuration words it, when one is not a broker URL."""
    urls = (broker,) if isinstance(broker, str) else tuple(broker or ())
    origin = FROM_ARGUMENT
    if not urls:
        urls = split_urls(os.environ.get(BROKER_ENV, ""))
        origin = FROM_ENVIRONMENT if urls else FROM_DEFAULT
        urls = urls or (DEFAULT_BROKER,)
    for index, url in enumerate(urls):
        problem = brokerurl.url_problem(url)
        if problem:
            item = f" (item {index})" if len(urls) > 1 else ""
            raise ValueError(f"broker URL from {origin}{item}: {problem}")
    problems = brokerurl.cluster_problems(urls)
    if problems:
        index, why = problems[0]
        raise ValueError(f"broker URLs from {origin}, item {index}: {why}")
    return urls, origin


def where(url: str, origin: str) -> str:
    """"virtual host '/' of amqp://guest@127.0.0.1:5672/%2F (from $QSUPERVISOR_BROKER)"."""
    return f"virtual host {brokerurl.vhost(url)!r} of {display_url(url)} (from {origin})"


def split_urls(text: str) -> tuple[str, ...]:
    return tuple(url for url in _URL_SEPARATOR.split(text.strip()) if url)


def as_urls(broker: BrokerUrls | None) -> tuple[str, ...]:
    """A single URL or a list, as a tuple; None or empty means the default."""
    if broker is None:
        return default_broker()
    urls = (broker,) if isinstance(broker, str) else tuple(broker)
    return urls or default_broker()


def display_url(url: str) -> str:
    """'amqp://guest@127.0.0.1:5672/%2F': the URL as it is safe to print or log."""
    try:
        parts = urlsplit(url)
        host, port, user = parts.hostname or "localhost", parts.port, parts.username
    except ValueError:  # a malformed port: still say which host, without the rest
        return "<unparsable broker URL>"
    if port is None:
        port = 5671 if parts.scheme == "amqps" else 5672
    where = f"[{host}]" if ":" in host else host
    login = f"{unquote(user)}@" if user else ""
    return f"{parts.scheme or 'amqp'}://{login}{where}:{port}{parts.path or '/'}"


def parameters(url: str, *, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    # Shows in `rabbitmqctl list_connections client_properties`: who is connected.
    params.client_properties = {"connection_name": name}
    if params.blocked_connection_timeout is None:
        params.blocked_connection_timeout = DEFAULT_BLOCKED_TIMEOUT
    return params


def connect(broker: BrokerUrls, *, name: str,
            tune: Callable[[pika.URLParameters], None] | None = None) -> pika.BlockingConnection:
    """A BlockingConnection to the first node that takes it (the list shuffled), or
    BrokerUnreachable saying where and why."""
    return BrokerNodes(broker).connect(name=name, tune=tune)[0]


class BrokerNodes:
    """The nodes of one cluster, in the order this process tries them.

    Shuffled once per process, so that a host's workers spread over the nodes instead of
    all crowding the first one; a node that refuses or drops us goes to the back, so the
    next attempt starts with one that may be alive.
    """

    def __init__(self, broker: BrokerUrls,
                 shuffle: Callable[[list[str]], None] = random.shuffle) -> None:
        self._order = list(dict.fromkeys(as_urls(broker)))
        shuffle(self._order)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self._order)

    def demote(self, url: str) -> None:
        """Try `url` last from now on (it refused us, or we lost it)."""
        if url in self._order and len(self._order) > 1:
            self._order.remove(url)
            self._order.append(url)

    def connect(self, *, name: str, tune: Callable[[pika.URLParameters], None] | None = None
                ) -> tuple[pika.BlockingConnection, str]:
        """(connection, the URL of the node it reached). Each node is tried once, in
        order; BrokerUnreachable when none answered, naming each and why."""
        failures: list[tuple[str, str]] = []
        for url in list(self._order):
            try:
                params = parameters(url, name=name)
                if tune is not None:
                    tune(params)
                return pika.BlockingConnection(params), url
            # AMQPConnectorException: a broker that accepts the TCP connection and then
            # never completes the handshake (AMQPConnectorStackTimeout) is not an AMQPError
            # in pika 1.2; uncaught, it ended the caller's process.
            except (pika.exceptions.AMQPError, AMQPConnectorException, OSError,
                    ValueError) as exc:
                failures.append((url, describe_error(exc)))
                self.demote(url)
        raise BrokerUnreachable(unreachable_message(failures))


def unreachable_message(failures: Sequence[tuple[str, str]]) -> str:
    if len(failures) == 1:
        url, why = failures[0]
        return f"cannot connect to the broker at {display_url(url)}: {why}"
    each = "; ".join(f"{display_url(url)}: {why}" for url, why in failures)
    return f"cannot connect to any of the {len(failures)} broker nodes ({each})"


def describe_error(exc: BaseException) -> str:
    """pika's connection errors, made readable: most wrap their cause in args[0]."""
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "login refused (check the user and password in the broker URL)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return f"access refused: {exc}"
    # AMQPConnectionError wraps the connector's error in args[0], which wraps the socket's
    # error in .exception: the innermost says what happened ("connection refused").
    while True:
        inner = getattr(exc, "exception", None)
        if not isinstance(inner, BaseException) and exc.args:
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            break
        exc = inner
    if isinstance(exc, AMQPConnectorStackTimeout):  # its text is a repr of the socket
        return "no AMQP handshake in time (the node takes connections but does not answer)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    text = str(exc) if not exc.args or exc.args[0] else ""
    return text or type(exc).__name__
