"""structlog set-up for the master and for the processes it forks."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import IO, Any, TextIO, cast

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class ReopenableFile:
    """A log file that `reopen()` swaps for a fresh handle, for logrotate's USR1."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] = self._open()

    def _open(self) -> IO[str]:
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> int:
        with self._lock:
            return self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def reopen(self) -> None:
        with self._lock:
            old, self._file = self._file, self._open()
            old.close()

    def fileno(self) -> int:
        return self._file.fileno()


class QuietStream:
    """stderr for children: once the master is gone nobody reads the pipe, and a log line
    must not turn a clean shutdown into a BrokenPipeError."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (BrokenPipeError, ValueError, OSError):
            return 0

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (ValueError, OSError):
            return False


# syslog priorities, which journald reads from a "<N>" line prefix.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def is_journal(stream: Any) -> bool:
    """True when `stream` is the journal: systemd puts the device and inode of the stream it
    connects to stdout/stderr in $JOURNAL_STREAM (systemd.exec(5)). Compared with the
    stream itself, so that a redirected stderr or an inherited variable does not count."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _logfmt_value(value: Any) -> str:
    """A string bare when that is unambiguous, else quoted; anything else as compact JSON."""
    if not isinstance(value, str):
        return json.dumps(value, default=str, separators=(",", ":"))
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return json.dumps(value)


class JournalRenderer:
    """`<N>event key=value ...`: journald takes the priority from the prefix (so
    `journalctl -p warning` and the highlighting of `systemctl status` work) and stamps each
    line itself, so there is no timestamp. A traceback keeps the priority on every line."""

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> str:
        prefix = f"<{PRIORITIES.get(event.pop('level', 'info'), 6)}>"
        event.pop("timestamp", None)
        text = str(event.pop("event", ""))
        trace = event.pop("exception", None)
        fields = " ".join(f"{key}={_logfmt_value(value)}" for key, value in event.items())
        lines = [text + (" " + fields if fields else "")]
        if trace:
            lines.extend(str(trace).rstrip("\n").splitlines())
        return "\n".join(prefix + line for line in lines)


def resolve_format(fmt: str, stream: Any) -> str:
    """`auto`: journal when the stream is the journal, console on a terminal, else json."""
    if fmt != "auto":
        return fmt
    if is_journal(stream):
        return "journal"
    return "console" if getattr(stream, "isatty", lambda: False)() else "json"


def _renderer(fmt: str, stream: Any) -> Any:
    fmt = resolve_format(fmt, stream)
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(colors=False)]
    if fmt == "journal":
        return [structlog.processors.format_exc_info, JournalRenderer()]
    return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]


def configure(fmt: str = "auto", level: str = "info", stream: Any | None = None) -> None:
    """Route structlog to `stream` (default stderr). Called again after every fork."""
    stream = stream if stream is not None else QuietStream(sys.stderr)
    processors: list[Any] = [
        _add_process_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        *_renderer(fmt, stream),
    ]
    structlog.reset_defaults()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        # Any object with write() and flush() will do (QuietStream, ReopenableFile).
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )
    _process_context.clear()


def set_level(level: str) -> None:
    """Change the level in place (an `update` of log_level)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)))


# Process-wide rather than contextvars: a worker logs from its I/O and handler threads,
# and new threads do not inherit the main thread's context.
_process_context: dict[str, Any] = {}


def _add_process_context(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in _process_context.items():
        event.setdefault(key, value)
    return event


def bind(**context: Any) -> None:
    """Context every later event of this process carries (program, slot, pid...)."""
    _process_context.update(pid=os.getpid(), **context)


def get(name: str = "qsupervisor") -> Any:
    return structlog.get_logger(name)
