"""What makes a broker URL acceptable: one rule for the configuration file (schema.py) and
the Python API (qsupervisor.publish, Publisher), which takes URLs from its caller or from
$QSUPERVISOR_BROKER."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from .fields import describe

SCHEMES = ("amqp", "amqps")


def url_problem(value: object) -> str | None:
    """Why `value` is not a broker URL, or None when it is one."""
    if not isinstance(value, str):
        return f"expected an amqp:// or amqps:// URL, got {describe(value)}"
    try:
        scheme = urlsplit(value).scheme
    except ValueError:  # "amqp://[::1" and the like
        return "expected an amqp:// or amqps:// URL, got one that cannot be parsed"
    if scheme not in SCHEMES:
        # Never echo the URL: it usually carries a password, and errors end up in logs.
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        return f"expected an amqp:// or amqps:// URL, got a URL with {shown}"
    return None


def cluster_problems(urls: Sequence[str]) -> list[tuple[int, str]]:
    """(index, why) for each URL of a cluster's list that repeats an earlier one or names
    another virtual host than the first: the program's queues live in one."""
    problems: list[tuple[int, str]] = []
    for index, url in enumerate(urls):
        if url in urls[:index]:
            problems.append((index, f"the same URL as item {urls.index(url)}"))
        elif vhost(url) != vhost(urls[0]):
            problems.append((index, f"virtual host {vhost(url)!r} differs from item 0's "
                                    f"{vhost(urls[0])!r}: the nodes of one cluster must "
                                    "name the same one, where the program's queues live"))
    return problems


def vhost(url: str) -> str:
    """The virtual host a URL names ('/' when it names none)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"
