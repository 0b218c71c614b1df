"""Small OS helpers shared by the master, the leaders and the workers."""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
import resource
import signal
from collections.abc import Collection, Iterable

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

_libc: ctypes.CDLL | None = None


def _prctl(option: int, arg: int) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl(option, arg, 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` when our parent exits, then close the race where the
    parent died before we asked (we would already have been reparented)."""
    parent = os.getppid()
    _prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def become_subreaper() -> None:
    """Workers orphaned by a dead leader are reparented to us, so we can reap them and
    account for their exit instead of leaving that to init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


# A soft limit above this is not asked for when the hard limit is unlimited (Linux refuses
# more than fs.nr_open, 1,048,576 by default).
OPEN_FILES_WANTED = 65536
# The soft open-files limit the daemon was started with, once the master has raised it;
# its children go back to it (restore_open_files_limit).
_started_with: int | None = None


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; return (before, after). The master
    holds two descriptors per worker (its channel, and the stats segment mmap keeps), so
    systemd's default soft limit of 1024 runs out near 500 workers; the hard limit
    (524,288 under systemd) is there to be asked for. The old soft limit is kept for
    the children: restore_open_files_limit."""
    global _started_with
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        _started_with = soft
        return soft, target
    return soft, soft


def open_files_started_with() -> int | None:
    """The soft limit raise_open_files_limit found (None: it did not raise it)."""
    return _started_with


def keep_open_files_started_with(soft: int | None) -> None:
    """In a master that re-executed: its limit is raised already, and the children still
    go back to the one the daemon was started with."""
    global _started_with
    _started_with = soft


def restore_open_files_limit() -> None:
    """In a child of the master (a leader, the herald): back to the soft limit the daemon
    was started with, as systemd asks of programs that raise theirs, since user code (a
    handler, a command) may still use select(), which breaks on descriptors from 1024 up."""
    if _started_with is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_started_with, hard))


def reset_signals() -> None:
    """A forked child inherits the parent's handlers and wake-up fd; start clean."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def close_fds_except(keep: Iterable[int]) -> None:
    """Close every fd above stderr except `keep`: a child must not hold the master's
    control socket, other programs' pipes or log files."""
    low = 3
    for fd in sorted(set(k for k in keep if k >= 3)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def drop_privileges(user: str | None, group: str | None) -> None:
    if user is None and group is None:
        return
    pw = pwd.getpwnam(user) if user else None
    gid = grp.getgrnam(group).gr_gid if group else (pw.pw_gid if pw else os.getgid())
    if pw is not None:
        os.initgroups(pw.pw_name, gid)
    os.setgid(gid)
    if pw is not None:
        os.setuid(pw.pw_uid)
        os.environ["HOME"] = pw.pw_dir
        os.environ["USER"] = os.environ["LOGNAME"] = pw.pw_name


def read_rss(pid: int) -> int | None:
    """Resident set size in bytes, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def signal_pid(pid: int, sig: int) -> None:
    """Send `sig` to `pid`; a process that is gone already is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe_status(status: int) -> str:
    """'exit code 3' or 'signal SIGKILL' from a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def orphaned_groups(parent: int, own_session: int, known: Collection[int]) -> set[int]:
    """Process groups of the children of `parent` that are not in `known` and run in a
    session other than `own_session`: what a subreaper inherited from a child that died
    (a job's command, which runs in a session of its own), as opposed to children it
    started itself. Linux's /proc; empty where it cannot be read."""
    groups: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return groups
    for name in names:
        if not name.isdigit() or int(name) in known:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parens.
            state, ppid, pgrp, session = stat[stat.rindex(b")") + 2:].split()[:4]
        except (OSError, ValueError):
            continue
        if int(ppid) == parent and int(session) != own_session and state != b"Z":
            groups.add(int(pgrp))
    return groups


def kill_groups(groups: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass  # gone already
