"""What qsupervisorctl needs from the configuration file: the socket (and the broker).

Kept apart from the loader, and light to import (PyYAML and the node reader only): every
qsupervisorctl call reads this, and its start-up time is the command's latency.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from .defaults import DEFAULT_BROKER, DEFAULT_SOCKET


def decode_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")  # tolerate a BOM left by Windows editors
    except UnicodeDecodeError:
        return None



def read_control_settings(path: str) -> tuple[str, tuple[str, ...]]:
    """(absolute socket path, broker URLs) for the control tool, as forgiving as possible.

    The control tool must still reach a running daemon while someone is halfway through
    editing its config, so anything unreadable falls back to the defaults. Only a
    missing file raises (FileNotFoundError): that usually means a wrong -c option.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise
    except OSError:  # unreadable (permissions, a directory): the defaults are our best guess
        return DEFAULT_SOCKET, (DEFAULT_BROKER,)
    text = decode_text(data)
    section = _daemon_section(text) if text is not None else None
    if not isinstance(section, dict):
        return DEFAULT_SOCKET, (DEFAULT_BROKER,)
    socket, broker = section.get("socket"), section.get("broker")
    base_dir = os.path.dirname(os.path.abspath(path))
    if isinstance(socket, str) and socket.strip() and "\0" not in socket:
        socket = resolve_path(socket, base_dir)
    else:
        socket = DEFAULT_SOCKET
    return socket, _broker_urls(broker)


def _broker_urls(value: Any) -> tuple[str, ...]:
    """The broker setting, one URL or a list of them; the default where it is unusable."""
    items = value if isinstance(value, list) else [value]
    urls = tuple(item for item in items
                 if isinstance(item, str) and item.startswith(("amqp://", "amqps://")))
    return urls or (DEFAULT_BROKER,)


def _daemon_section(text: str) -> Any:
    try:
        document = yaml.safe_load(text)
    except Exception:  # a syntax error (or a value PyYAML cannot build): use what precedes it
        return salvage_section(text, "qsupervisord")
    return document.get("qsupervisord") if isinstance(document, dict) else None


def salvage_section(text: str, key: str) -> dict[str, str] | None:
    """The scalar settings of the top-level mapping `key`, read from text that is not valid
    YAML as a whole. PyYAML parses incrementally, so whatever precedes the syntax error is
    known: the control tool can still find the socket of a daemon whose file someone is
    halfway through editing (and show them the daemon's report of the error)."""
    found: dict[str, str] | None = None
    # One entry per open collection: [is_mapping, expecting_key, current_key].
    stack: list[list[Any]] = []

    def in_section() -> bool:  # the section's value is being read at the top level
        return stack[0][0] and not stack[0][1] and stack[0][2] == key

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) == 1 and in_section() and found is None:
                    found = {}
                stack.append([isinstance(event, yaml.MappingStartEvent), True, None])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                if stack and stack[-1][0]:  # that collection was a key or a value
                    stack[-1][1] = not stack[-1][1]
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)) and stack:
                top = stack[-1]
                if not top[0]:
                    continue  # a sequence item
                if top[1]:
                    top[2] = getattr(event, "value", None)
                elif (found is not None and len(stack) == 2 and in_section()
                      and isinstance(top[2], str) and isinstance(event, yaml.ScalarEvent)):
                    found[top[2]] = event.value
                top[1] = not top[1]
    except yaml.YAMLError:
        pass
    return found


def resolve_path(value: str, base_dir: str) -> str:
    """Absolute, normalised path; relative ones are relative to the config file's directory
    (not the daemon's working directory, which is '/' once it runs as a service)."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
