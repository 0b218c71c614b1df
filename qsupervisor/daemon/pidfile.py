"""The pidfile: refuse to start beside a live daemon, replace a stale file."""

from __future__ import annotations

import os


class AlreadyRunning(Exception):
    pass


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_daemon_alive(pid: int) -> bool:
    """True if `pid` is a live qsupervisord; a reused pid of another program is not."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"qsupervisord" in cmdline


def check(path: str) -> int | None:
    """Raise AlreadyRunning if the pidfile names a live daemon; return a stale pid."""
    pid = read_pid(path)
    if pid is None or pid == os.getpid():
        return None
    if is_daemon_alive(pid):
        raise AlreadyRunning(f"qsupervisord is already running (pid {pid}, pidfile {path})")
    return pid


def write(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove(path: str) -> None:
    if read_pid(path) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass
