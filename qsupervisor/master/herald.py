"""The master's side of the herald (herald/main.py): starting it, respawning it, feeding
it the summary each interval, and asking it for the fleet view.

Nothing here waits on the herald. Messages go through an Outbox; a `fleet` question is
answered through a callback, and the command that asked replies on its own after a bound
(commands.FLEET_WAIT) whatever the herald does. A herald that dies is started again after
a backoff; the daemon runs on without one meanwhile, its fleet view unavailable.
"""

from __future__ import annotations

import itertools
import signal
import socket
from typing import Any, Callable, Protocol

from qsupervisor import ipc, logs, procutil
from qsupervisor.channel import Ev, Op
from qsupervisor.config import DaemonConfig
from qsupervisor.master.handover import adopt_socket
from qsupervisor.master.loop import EventLoop, Timer, deadline
from qsupervisor.master.outbox import Outbox
from qsupervisor.master.system import Processes

log = logs.get("qsupervisor.master")

Answer = dict[str, Any]
RESPAWN_FIRST, RESPAWN_MAX = 1.0, 60.0  # seconds before starting a dead herald again
HEALTHY_AFTER = 60.0  # a herald that lived this long starts the backoff afresh
PENDING_MAX_AGE = 30.0  # questions the herald never answered are forgotten after this


class HeraldHost(Protocol):
    loop: EventLoop
    processes: Processes
    daemon: DaemonConfig
    log_format: str

    def track_pid(self, pid: int, owner: Any) -> None: ...
    def forget_pid(self, pid: int) -> None: ...


class HeraldLink:
    def __init__(self, host: HeraldHost, summary: Callable[[], dict[str, Any]]) -> None:
        self.host = host
        self.summary = summary
        self.pid: int | None = None
        self.stopped = False
        self._sock: socket.socket | None = None
        self._outbox: Outbox | None = None
        self._started_at = 0.0
        self._failures = 0
        self._respawn: Timer | None = None
        self._announce: Timer | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[float, Callable[[Answer], None]]] = {}

    # -- its life -------------------------------------------------------------------------

    def start(self) -> None:
        self._respawn = None
        if self.stopped or self.pid is not None:
            return
        master_end, herald_end = ipc.socketpair()
        try:
            pid = self.host.processes.start_herald(self.host.daemon, self.host.log_format,
                                                   herald_end)
        except OSError as exc:
            master_end.close()
            log.error("cannot start the herald; the fleet view is unavailable", error=str(exc))
            self._schedule_respawn()
            return
        finally:
            herald_end.close()
        self.pid = pid
        self._adopt(master_end)
        self._started_at = self.host.loop.clock.monotonic()
        self.host.track_pid(pid, self)
        log.info("herald started", herald_pid=pid)
        if self._announce is None:
            self._tick()  # announce at once: a new daemon shows in the fleet right away

    def _adopt(self, sock: socket.socket) -> None:
        self._sock = sock
        self._outbox = Outbox(sock, self.host.loop, lambda: self.host.loop.call_later(
            0, self._wedged))
        self.host.loop.add_reader(sock, self._on_message)

    def settled(self) -> str | None:
        """Why the herald's channel cannot be handed over now (None: it can)."""
        if self._outbox is not None and len(self._outbox):
            return "messages to the herald are waiting to be sent"
        return None

    def export_state(self) -> dict[str, Any]:
        """What a re-exec hands over; fleet questions in flight are the clients' (their
        commands are answered with an error by the re-exec)."""
        return {"pid": self.pid, "sock": self._sock.fileno() if self._sock else None,
                "started_at": self._started_at, "failures": self._failures,
                "respawn_at": deadline(self._respawn), "announce_at": deadline(self._announce)}

    def load_state(self, data: dict[str, Any]) -> None:
        self.pid, self._started_at = data["pid"], float(data["started_at"])
        self._failures = int(data["failures"])
        if data["sock"] is not None:
            self._adopt(adopt_socket(int(data["sock"])))
        if self.pid is not None:
            self.host.track_pid(self.pid, self)
        loop = self.host.loop
        if data["respawn_at"] is not None:
            self._respawn = loop.call_at(float(data["respawn_at"]), self.start)
        if data["announce_at"] is not None:
            self._announce = loop.call_at(float(data["announce_at"]), self._tick)

    def stop(self) -> None:
        """At shutdown: no more announcements, no respawn; the herald ends at SIGTERM."""
        self.stopped = True
        for timer in (self._respawn, self._announce):
            if timer is not None:
                timer.cancel()
        self._respawn = self._announce = None
        if self.pid is not None:
            self.host.processes.signal(self.pid, signal.SIGTERM)

    def restart(self) -> None:
        """New broker settings: the herald reconnects by being started again."""
        if self.pid is not None:
            self.host.processes.signal(self.pid, signal.SIGTERM)
            self._failures = -1  # not a failure: child_exited starts it again at once

    def child_exited(self, pid: int, status: int) -> None:
        if pid != self.pid:
            return
        self._close()
        self.pid = None
        for _asked, callback in self._pending.values():
            callback({"error": "the herald exited before answering"})
        self._pending.clear()
        if self.stopped:
            return
        if self._failures == -1:
            self._failures = 0
            self.start()
            return
        lived = self.host.loop.clock.monotonic() - self._started_at
        if lived >= HEALTHY_AFTER:
            self._failures = 0
        log.warning("herald exited; starting it again", herald_pid=pid,
                    exit=procutil.describe_status(status))
        self._schedule_respawn()

    def _schedule_respawn(self) -> None:
        self._failures += 1
        delay = min(RESPAWN_FIRST * 2 ** (self._failures - 1), RESPAWN_MAX)
        self._respawn = self.host.loop.call_later(delay, self.start)

    def _close(self) -> None:
        if self._sock is not None:
            self._read_last_words()
            self.host.loop.remove_reader(self._sock)
            if self._outbox is not None:
                self._outbox.close()
            self._sock.close()
        self._sock = self._outbox = None

    def _read_last_words(self) -> None:
        while self._sock is not None and ipc.readable(self._sock) and self._on_message():
            pass

    def _wedged(self) -> None:
        if self.pid is not None:
            log.error("herald not reading its channel; killing it", herald_pid=self.pid)
            self.host.processes.signal(self.pid, signal.SIGKILL)

    # -- what it is for -----------------------------------------------------------------

    def reschedule(self) -> None:
        """A new interval: the next announcement goes out now, then at the new pace."""
        if self._announce is not None:
            self._announce.cancel()
            self._announce = None
        if not self.stopped:
            self._tick()

    def _tick(self) -> None:
        self._announce = self.host.loop.call_later(self.host.daemon.fleet.interval, self._tick)
        self._send({"op": Op.ANNOUNCE, "summary": self.summary()})

    def reopen(self) -> None:
        self._send({"op": Op.REOPEN})

    def ask(self, callback: Callable[[Answer], None]) -> bool:
        """`callback` gets the herald's fleet view; False if there is no herald to ask."""
        now = self.host.loop.clock.monotonic()
        for rid in [r for r, (asked, _cb) in self._pending.items()
                    if now - asked > PENDING_MAX_AGE]:
            del self._pending[rid]
        rid = next(self._ids)
        if not self._send({"op": Op.FLEET, "rid": rid}):
            return False
        self._pending[rid] = (now, callback)
        return True

    def _send(self, msg: ipc.Message) -> bool:
        if self._outbox is None:
            return False
        try:
            self._outbox.send(msg)
        except OSError:
            return False  # gone; its exit is handled where it is reaped
        return True

    def _on_message(self) -> bool:
        """Act on one message; False at end of file."""
        assert self._sock is not None
        try:
            msg = ipc.recv_message(self._sock)
        except BlockingIOError:
            return True
        if msg is None:
            self.host.loop.remove_reader(self._sock)
            return False
        if msg.get("ev") == Ev.FLEET:
            entry = self._pending.pop(msg.get("rid"), None)  # type: ignore[arg-type]
            if entry is not None:
                entry[1](msg)
        return True
