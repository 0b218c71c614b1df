"""A blocking client for the control socket, used by qsupervisorctl and the tests."""

from __future__ import annotations

import json
import socket
from typing import Any, Callable

from qsupervisor.control import protocol


class Unreachable(Exception):
    """The daemon's socket does not answer (not running, wrong path, no permission)."""


class CommandFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self._next_id = 0

    def call(self, cmd: str, args: dict[str, Any] | None = None,
             on_stream: Callable[[Any], None] | None = None, until_eof: bool = False) -> Any:
        """Send one request; return its result or raise CommandFailed / Unreachable."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise Unreachable(f"cannot reach qsupervisord at {self.path}: {exc.strerror or exc}") from None
        self._next_id += 1
        with sock:
            try:
                try:
                    sock.sendall(protocol.encode(protocol.request(cmd, args, self._next_id)))
                except (BrokenPipeError, ConnectionResetError):
                    # A daemon that refuses us (allow-list) replies and hangs up at once,
                    # possibly before our request is written; its reply is still ours to read.
                    pass
                return self._read_reply(sock, on_stream, until_eof)
            except socket.timeout:
                raise CommandFailed(protocol.FAILED, f"no reply within {self.timeout}s") from None
            except OSError as exc:
                raise Unreachable(f"connection to {self.path} lost: {exc}") from None

    def _read_reply(self, sock: socket.socket, on_stream: Callable[[Any], None] | None,
                    until_eof: bool) -> Any:
        """The final reply; with `until_eof`, also wait for the daemon to close the
        connection (it does so only by exiting, after `shutdown`)."""
        with sock.makefile("rb") as lines:
            for line in lines:
                message = json.loads(line)
                if "stream" in message:
                    if on_stream is not None:
                        on_stream(message["stream"])
                    continue
                if message.get("ok"):
                    if until_eof:
                        for _ in lines:
                            pass
                    return message.get("result")
                error = message.get("error") or {}
                raise CommandFailed(error.get("code", protocol.FAILED),
                                    error.get("message", "unknown error"))
        raise Unreachable(f"qsupervisord at {self.path} closed the connection without a reply")
