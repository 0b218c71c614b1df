"""The daemon's end of the control socket: non-blocking, inside the master's loop.

A client can send garbage, stall mid-line, or vanish; none of that may block or crash the
master, so every connection has its own buffers and every failure ends that connection
only.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import select
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable

from qsupervisor import logs
from qsupervisor.control import protocol
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.stream_out import send_pending

log = logs.get("qsupervisor.control")

ACCEPT_PAUSE = 0.1  # seconds between accept attempts while out of descriptors
# Replies a client has not read yet. Past READ_PAUSE the master stops reading its requests
# (they wait in the kernel, and a client that pipelines blocks on its own send) until the
# backlog is down to half; past WRITE_LIMIT (only output nobody asked for again, a
# `tail --follow`, grows it that far) the client is dropped: the master never holds
# unbounded memory, nor waits, for a peer that does not read.
READ_PAUSE = 1024 * 1024
WRITE_LIMIT = 16 * 1024 * 1024

_UCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True)
class PeerPolicy:
    """Who may talk to the daemon, besides root and the daemon's own user."""

    uids: frozenset[int]
    gids: frozenset[int]

    @classmethod
    def from_names(cls, users: tuple[str, ...], groups: tuple[str, ...]) -> PeerPolicy:
        uids = {0, os.getuid()}
        for name in users:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                log.warning("allow_users names an unknown user", user=name)
        gids = set()
        for name in groups:
            try:
                gids.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                log.warning("allow_groups names an unknown group", group=name)
        return cls(frozenset(uids), frozenset(gids))

    def allows(self, pid: int, uid: int, gid: int) -> bool:
        if uid in self.uids or gid in self.gids:
            return True
        return bool(self.gids) and bool(self.gids.intersection(_groups_of(pid, uid, gid)))


def _groups_of(pid: int, uid: int, gid: int) -> list[int]:
    """The peer process's own supplementary groups: what the kernel would check. (The group
    database can list a user in a group their session has not picked up yet.)"""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return [int(g) for g in line.split()[1:]]
    except (OSError, ValueError):
        pass
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return [gid]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(data)
    return pid, uid, gid


Dispatch = Callable[["Connection", dict[str, Any]], None]


class Connection:
    """One client. `send` queues a message; the loop writes it when the socket allows."""

    def __init__(self, sock: socket.socket, loop: EventLoop, dispatch: Dispatch,
                 on_close: Callable[[Connection], None], peer: tuple[int, int, int]) -> None:
        self.sock = sock
        self.peer = peer
        self._loop = loop
        self._dispatch = dispatch
        self._on_close = on_close
        self._rbuf = b""
        self._wbuf = bytearray()
        self._close_after_flush = False
        self.closed = False
        self.on_disconnect: list[Callable[[], None]] = []  # streams unsubscribe
        # Requests without their final reply yet. A client may shut down its writing side
        # after the request (socat does): replies still owed must reach it.
        self.outstanding = 0
        self._read_closed = False
        self._paused = False  # not reading requests while READ_PAUSE bytes wait to go out
        loop.add_reader(sock, self._on_readable)

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            data = protocol.encode(message)
        except ValueError as exc:  # a NaN in a result: never write what is not JSON
            log.error("reply not sent: it is not strict JSON", error=str(exc))
            data = protocol.encode(protocol.error(message.get("id"), protocol.FAILED,
                                                  f"internal error: {exc}"))
        if len(self._wbuf) + len(data) > WRITE_LIMIT:
            log.warning("control client not reading its replies; closing it",
                        unread=len(self._wbuf), limit=WRITE_LIMIT)
            self.close()
            return
        if not self._wbuf:
            self._loop.add_writer(self.sock, self._on_writable)
        self._wbuf += data
        if len(self._wbuf) > READ_PAUSE and not self._paused:
            self._paused = True
            if not self._read_closed:
                self._loop.remove_reader(self.sock)
        if "ok" in message and message.get("id") is not None:
            self.outstanding = max(0, self.outstanding - 1)
            if self._read_closed and not self.outstanding:
                self._close_after_flush = True

    @property
    def pending_output(self) -> bool:
        return bool(self._wbuf)

    def close_after_flush(self) -> None:
        self._close_after_flush = True
        if not self._wbuf:
            self.close()

    def idle_state(self) -> dict[str, Any] | None:
        """What a re-exec hands over of a connection with no request in progress (its
        descriptor, and the bytes of a request not complete yet, or a reply not sent);
        None for one that waits for a reply or is closing, which the exec closes."""
        if self.closed or self.outstanding or self._read_closed or self._close_after_flush:
            return None
        return {"sock": self.sock.fileno(), "rbuf": self._rbuf.decode("latin-1"),
                "wbuf": bytes(self._wbuf).decode("latin-1")}

    def take_buffers(self, rbuf: bytes, wbuf: bytes) -> None:
        """The buffers an idle connection had in the old image."""
        self._rbuf = rbuf
        if wbuf:
            self._wbuf += wbuf
            self._loop.add_writer(self.sock, self._on_writable)

    def flush_now(self) -> None:
        """Write what the socket takes now, without the loop: the last thing a master
        does for its clients before a re-exec closes their connections."""
        if self._wbuf and not self.closed:
            send_pending(self.sock, self._wbuf)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._read_closed = True
            self._loop.remove_reader(self.sock)
            if _peer_gone(self.sock):
                self.close()  # nobody to reply to; a `tail -f` it held goes with it
            elif not self.outstanding:
                self.close_after_flush()
            return
        self._rbuf += data
        self._handle_lines()

    def _handle_lines(self) -> None:
        while not self.closed and not self._paused and b"\n" in self._rbuf:
            line, self._rbuf = self._rbuf.split(b"\n", 1)
            if line.strip():
                self._handle_line(line)
        if len(self._rbuf) > protocol.MAX_LINE and b"\n" not in self._rbuf:
            self._rbuf = b""
            self.send(protocol.error(None, protocol.TOO_LARGE,
                                     f"request longer than {protocol.MAX_LINE} bytes"))
            self.close_after_flush()

    def _handle_line(self, line: bytes) -> None:
        if len(line) > protocol.MAX_LINE:
            self.send(protocol.error(None, protocol.TOO_LARGE,
                                     f"request longer than {protocol.MAX_LINE} bytes"))
            return
        try:
            request = protocol.parse_request(line)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(None, exc.code, exc.message))
            return
        if request.get("id") is not None:
            self.outstanding += 1
        try:
            self._dispatch(self, request)
        except Exception as exc:  # a bug in one command must not take the master down
            log.exception("control command failed", cmd=request.get("cmd"))
            self.send(protocol.error(request.get("id"), protocol.FAILED,
                                     f"internal error: {type(exc).__name__}: {exc}"))

    def _on_writable(self) -> None:
        if not send_pending(self.sock, self._wbuf):
            self.close()
            return
        if self._paused and len(self._wbuf) <= READ_PAUSE // 2:
            self._resume_reading()
        if not self._wbuf and not self.closed:
            self._loop.remove_writer(self.sock)
            if self._close_after_flush:
                self.close()

    def _resume_reading(self) -> None:
        self._paused = False
        if not self._read_closed:
            self._loop.add_reader(self.sock, self._on_readable)
        self._handle_lines()  # what came in before the pause

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock)
        self._loop.remove_writer(self.sock)
        self.sock.close()
        for callback in self.on_disconnect:
            callback()
        self._on_close(self)


def _peer_gone(sock: socket.socket) -> bool:
    """At end of file: did the client close its socket, or only its writing side (which a
    client waiting for its replies may do)? Only a full close raises POLLHUP. Without this,
    a `tail -f` whose client went away held its descriptor until output next arrived."""
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


class ControlServer:
    def __init__(self, path: str, mode: int, policy: PeerPolicy,
                 listening: socket.socket | None = None) -> None:
        """Binds `path`; or, given `listening` (a re-exec hands its socket over, with the
        connections waiting in its backlog), serves that."""
        self.path = path
        self.policy = policy
        self.connections: dict[int, Connection] = {}
        self._accept_paused_since: float | None = None
        if listening is not None:
            self.sock = listening
            self.sock.setblocking(False)
            return
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a tight umask, then chmod: no window where the socket is wider open.
        old_umask = os.umask(0o177)
        try:
            if os.path.exists(path):
                os.unlink(path)  # the caller has checked that no live daemon owns it
            self.sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        self.sock.listen(128)
        self.sock.setblocking(False)

    def start(self, loop: EventLoop, dispatch: Dispatch) -> None:
        self._loop = loop
        self._dispatch = dispatch
        loop.add_reader(self.sock, self._on_accept)

    def _on_accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            if self._accept_paused_since is not None:
                log.info("accepting control connections again",
                         paused_for=round(self._loop.clock.monotonic()
                                          - self._accept_paused_since, 3))
                self._accept_paused_since = None
            sock.setblocking(False)
            peer = peer_credentials(sock)
            if not self.policy.allows(*peer):
                self._refuse(sock, peer)
                continue
            conn = Connection(sock, self._loop, self._dispatch, self._forget, peer)
            self.connections[sock.fileno()] = conn

    def _accept_failed(self, exc: OSError) -> None:
        """Out of descriptors (EMFILE, ENFILE), the pending connection stays in the
        backlog and the listener stays readable: accepting again at once would spin. Stop
        listening for ACCEPT_PAUSE and try again; one log line per episode, not per try."""
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log.warning("accept failed", error=str(exc))
            return
        if self._accept_paused_since is None:
            self._accept_paused_since = self._loop.clock.monotonic()
            log.error("out of file descriptors: not accepting control connections; "
                      f"trying again every {ACCEPT_PAUSE:g} s", error=str(exc))
        self._loop.remove_reader(self.sock)
        self._loop.call_later(ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self.sock.fileno() != -1:  # not closed by stop_listening meanwhile
            self._loop.add_reader(self.sock, self._on_accept)
            self._on_accept()

    @staticmethod
    def _refuse(sock: socket.socket, peer: tuple[int, int, int]) -> None:
        log.warning("control connection refused", peer_pid=peer[0], peer_uid=peer[1],
                    peer_gid=peer[2])
        reply = protocol.error(None, protocol.REFUSED,
                               f"uid {peer[1]} is not allowed to control this daemon "
                               "(see allow_users and allow_groups)")
        try:
            sock.send(protocol.encode(reply))  # small: fits the fresh socket's buffer
        except OSError:
            pass
        sock.close()

    def adopt(self, sock: socket.socket) -> Connection:
        """A client connection handed over through a re-exec (the one that asked for it)."""
        sock.setblocking(False)
        conn = Connection(sock, self._loop, self._dispatch, self._forget,
                          peer_credentials(sock))
        self.connections[sock.fileno()] = conn
        return conn

    def _forget(self, conn: Connection) -> None:
        for fd, known in list(self.connections.items()):
            if known is conn:
                del self.connections[fd]

    def stop_listening(self) -> None:
        """No new clients; the socket file goes. Open connections are left alone."""
        self._loop.remove_reader(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
