"""Captured output of a program's leader and workers: one pipe, one file, size rotation.

The master owns the read end and the file, so rotation never needs the cooperation of the
workers, and `qsupervisorctl tail -f` is fed from the same bytes that reach the file.
"""

from __future__ import annotations

import os
from typing import Callable

from qsupervisor import logs

log = logs.get("qsupervisor.master")

READ_CHUNK = 65536


class ProgramOutput:
    def __init__(self, name: str, log_dir: str, max_size: int, backups: int,
                 pipe: tuple[int, int] | None = None) -> None:
        """`pipe`: the (read, write) ends a re-exec handed over, still shared with the
        program's leader and workers; else a new pipe."""
        self.name = name
        self.path = os.path.join(log_dir, f"{name}.log")
        self.max_size = max_size
        self.backups = backups
        self.read_fd, self.write_fd = pipe if pipe is not None else os.pipe()
        if pipe is not None:
            for fd in pipe:
                os.set_inheritable(fd, False)
        os.set_blocking(self.read_fd, False)
        self._file = open(self.path, "ab", buffering=0)
        self._size = self._file.tell()
        self.followers: list[Callable[[bytes], None]] = []

    def on_readable(self) -> None:
        try:
            data = os.read(self.read_fd, READ_CHUNK)
        except BlockingIOError:
            return
        if not data:
            return
        self._write(data)
        for follower in list(self.followers):
            follower(data)

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            log.error("cannot write captured output", program=self.name, path=self.path,
                      error=str(exc))
            return
        self._size += len(data)
        if self.max_size and self._size >= self.max_size:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        try:
            for i in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            if self.backups > 0:
                os.replace(self.path, f"{self.path}.1")
            else:
                os.unlink(self.path)
        except OSError as exc:
            log.error("cannot rotate captured output", program=self.name, error=str(exc))
        self.reopen()

    def reopen(self) -> None:
        """A fresh handle on `path`, after rotation by us or by logrotate."""
        try:
            self._file.close()
        except OSError:
            pass
        self._file = open(self.path, "ab", buffering=0)
        self._size = self._file.tell()

    def tail(self, lines: int) -> bytes:
        """The last `lines` lines of the current file, read backwards in blocks."""
        if lines <= 0:
            return b""
        with open(self.path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            data = b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(READ_CHUNK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
        # A last line without its newline yet is a line too; a final newline ends one.
        keep = lines + 1 if data.endswith(b"\n") else lines
        return b"\n".join(data.split(b"\n")[-keep:])

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._file.close()
