"""Opening a blocking connection, and naming a broker without leaking its password."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
BROKER_ENV = "QSUPERVISOR_BROKER"
# A short-lived tool must not hang forever on a broker that blocks publishers (memory or
# disk alarm); long-running users pass their own value in the URL.
DEFAULT_BLOCKED_TIMEOUT = 30.0


class BrokerUnreachable(Exception):
    """The broker could not be connected to; the message names it, password left out."""


def default_broker() -> str:
    return os.environ.get(BROKER_ENV) or DEFAULT_BROKER


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


def connect(url: str, *, name: str) -> pika.BlockingConnection:
    """A BlockingConnection, or BrokerUnreachable saying where and why in one line."""
    try:
        return pika.BlockingConnection(parameters(url, name=name))
    except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
        raise BrokerUnreachable(
            f"cannot connect to the broker at {display_url(url)}: {describe_error(exc)}") from exc


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
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    text = str(exc) if not exc.args or exc.args[0] else ""
    return text or type(exc).__name__
