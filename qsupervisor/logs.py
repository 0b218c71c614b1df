"""structlog set-up for the master and for the processes it forks."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import IO, Any, Dict, List, Optional

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


def _renderer(fmt: str, stream: Any) -> Any:
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(colors=False)]
    return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]


def configure(fmt: str = "auto", level: str = "info", stream: Optional[Any] = None) -> None:
    """Route structlog to `stream` (default stderr). Called again after every fork."""
    stream = stream if stream is not None else QuietStream(sys.stderr)
    processors: List[Any] = [
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
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _process_context.clear()


def set_level(level: str) -> None:
    """Change the level in place (an `update` of log_level)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)))


# Process-wide rather than contextvars: a worker logs from its I/O and handler threads,
# and new threads do not inherit the main thread's context.
_process_context: Dict[str, Any] = {}


def _add_process_context(_logger: Any, _name: str, event: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in _process_context.items():
        event.setdefault(key, value)
    return event


def bind(**context: Any) -> None:
    """Context every later event of this process carries (program, slot, pid...)."""
    _process_context.update(pid=os.getpid(), **context)


def get(name: str = "qsupervisor") -> Any:
    return structlog.get_logger(name)
