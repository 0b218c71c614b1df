"""The master's world in a unit test: a manual clock, and fake leaders and workers.

Only fork, kill and waitpid are fake (master/system.py's Processes). The channels are
real SEQPACKET socketpairs carrying the real messages, the stats segments are real memfds,
and the pool, programs, commands and status under test are the daemon's own code.

By default the fakes behave like healthy processes: a leader is ready as soon as it
starts, a worker reports "ready" once spawned, a worker leaves when it is sent SIGTERM or
SIGKILL, and a retired leader exits once its last worker has. A test switches any of that
off (`World(auto_ready=False)`, `world.obedient = False`) and plays the process itself.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from qsupervisor import __version__, ipc
from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.master.loop import EventLoop
from qsupervisor.stats_segment import Stats

# Above any kernel's pid_max: /proc has nothing for a fake pid, so status reads no RSS and
# a stray signal could never reach a real process (the fakes never send one anyway).
PID_BASE = 10_000_000


def exit_status(code: int = 0) -> int:
    """A waitpid status for `exit(code)`."""
    return code << 8


def signal_status(sig: int) -> int:
    """A waitpid status for death by `sig`."""
    return int(sig)


class ManualClock:
    """Time moves only when the test says so; wall and monotonic move together. The wall
    clock starts at the real time: a fake worker's stats segment records a job's start
    with time.time(), as a worker does, and the master compares it with this clock."""

    def __init__(self) -> None:
        self._monotonic = 1000.0
        self._wall = time.time()

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall += seconds


class FakeWorker:
    def __init__(self, leader: FakeLeader, wid: int, slot: int, pid: int,
                 channel_fd: int, stats_fd: int) -> None:
        self.leader = leader
        self.wid = wid
        self.slot = slot
        self.pid = pid
        self.channel = socket.socket(fileno=channel_fd)
        self.stats = Stats(stats_fd)
        os.close(stats_fd)
        self.exited = False

    def send(self, **msg: Any) -> None:
        ipc.send(self.channel, msg)

    def ready(self, node: str = "amqp://guest@rabbit-1:5672/%2F") -> None:
        self.send(ev="ready", node=node, version=self.leader.world.version)

    def start_job(self, job_id: str) -> None:
        self.stats.job_started(job_id)

    def received(self) -> list[ipc.Message]:
        """What the master has sent this worker and it has not read yet."""
        found = []
        while ipc.readable(self.channel):
            msg = ipc.recv_message(self.channel)
            if msg is None:
                break
            found.append(msg)
        return found

    def exit(self, code: int = 0, sig: int | None = None, reason: str | None = None,
             error: str | None = None, settled: bool = False) -> None:
        """Leave: say why first (as a worker does), then the leader reports the status."""
        if self.exited:
            return
        if reason is not None:
            self.send(ev="exiting", reason=reason, error=error, settled=settled)
        self.exited = True
        self.channel.close()
        self.leader.report_exit(self, signal_status(sig) if sig else exit_status(code))


class FakeLeader:
    def __init__(self, world: World, program: ProgramConfig, sock: socket.socket,
                 pid: int) -> None:
        self.world = world
        self.program = program
        self.sock = sock.dup()  # the master closes its copy of the leader's end
        self.sock.setblocking(False)
        self.pid = pid
        self.workers: dict[int, FakeWorker] = {}
        self.spawned: list[FakeWorker] = []
        self.requests: list[ipc.Message] = []  # what the master asked besides spawn
        self.retiring = False
        self.exited = False
        self.fail_spawns: str | None = None  # answer spawn_failed with this error
        self.deaf = False  # stops reading its channel (wedged)

    def send(self, **msg: Any) -> None:
        ipc.send(self.sock, msg)

    def ready(self, files: tuple[tuple[str, float], ...] = ()) -> None:
        if files:
            self.send(ev="preload_files", files=[list(f) for f in files])
        self.send(ev="ready", modules=len(files), version=self.world.version)

    def serve(self) -> None:
        """Read and act on what the master sent, as the leader's loop does."""
        while not self.exited and not self.deaf:
            try:
                msg, fds = ipc.recv(self.sock)
            except (BlockingIOError, OSError):
                return
            if msg is None:  # the master closed its end
                return
            op = msg.get("op")
            if op == "spawn":
                self._spawn(msg, fds)
                continue
            self.requests.append(msg)
            if op == "retire":
                self.retiring = True
                self._exit_if_retired()
            elif op == "queue_stats" and self.world.queue_stats is not None:
                self.send(ev="queue_stats", rid=msg.get("rid"), **self.world.queue_stats)

    def _spawn(self, msg: ipc.Message, fds: list[int]) -> None:
        if self.fail_spawns is not None:
            for fd in fds:
                os.close(fd)
            self.send(ev="spawn_failed", wid=msg["wid"], error=self.fail_spawns)
            return
        worker = FakeWorker(self, int(msg["wid"]), int(msg["slot"]), self.world.new_pid(),
                            fds[0], fds[1])
        self.workers[worker.pid] = worker
        self.spawned.append(worker)
        self.send(ev="spawned", wid=worker.wid, pid=worker.pid)
        if self.world.auto_ready:
            worker.ready()

    def report_exit(self, worker: FakeWorker, status: int) -> None:
        self.workers.pop(worker.pid, None)
        if not self.exited:
            self.send(ev="exited", pid=worker.pid, status=status)
        self._exit_if_retired()

    def _exit_if_retired(self) -> None:
        if self.retiring and not self.workers and self.world.obedient:
            self.exit(0)

    def exit(self, status: int = 0) -> None:
        if self.exited:
            return
        self.exited = True
        self.world.leader_exited(self, status)


class FakeHerald:
    """The far end of the master's herald channel: a test reads what the master sent
    and answers as the herald would."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock.dup()
        self.sock.setblocking(False)
        self.pid = pid

    def received(self) -> list[ipc.Message]:
        found = []
        while ipc.readable(self.sock):
            msg = ipc.recv_message(self.sock)
            if msg is None:
                break
            found.append(msg)
        return found

    def send(self, **msg: Any) -> None:
        ipc.send(self.sock, msg)


class FakeProcesses:
    """master/system.py's Processes, with fake leaders instead of forks."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.signals: list[tuple[int, int]] = []
        self.exits: list[tuple[int, int]] = []  # what reap() hands the master next

    def start_leader(self, program: ProgramConfig, daemon: DaemonConfig, log_format: str,
                     sock: socket.socket, output_fd: int) -> int:
        if self.world.fork_error is not None:
            raise OSError(self.world.fork_error)
        leader = FakeLeader(self.world, program, sock, self.world.new_pid())
        self.world.leaders.append(leader)
        if self.world.auto_ready:
            leader.ready()
        return leader.pid

    def start_herald(self, daemon: DaemonConfig, log_format: str, sock: socket.socket) -> int:
        """A herald that never answers unless a test plays it (world.herald)."""
        if self.world.fork_error is not None:
            raise OSError(self.world.fork_error)
        self.world.herald = FakeHerald(sock, self.world.new_pid())
        return self.world.herald.pid

    def signal(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))
        if self.world.obedient:
            self.world.obey(pid, sig)

    def reap(self) -> tuple[int, int] | None:
        return self.exits.pop(0) if self.exits else None


class World:
    """Hosts programs as the master does (master/host.py's Host), or feeds a real Master
    (attach): then leader exits reach it through reap() and handle_chld()."""

    def __init__(self, auto_ready: bool = True, daemon: DaemonConfig | None = None) -> None:
        self.clock = ManualClock()
        self.loop = EventLoop(self.clock)
        self.processes = FakeProcesses(self)
        self.daemon = daemon or DaemonConfig()
        self.log_format = "json"
        self.auto_ready = auto_ready
        self.version = __version__  # what the fake leaders and workers say they run
        self.obedient = True
        self.fork_error: str | None = None
        self.queue_stats: dict[str, Any] | None = None  # leaders' answer; None: silence
        self.leaders: list[FakeLeader] = []
        self.herald: FakeHerald | None = None
        self.pids: dict[int, Any] = {}
        self.changes = 0
        self._next_pid = PID_BASE
        self._devnull = os.open(os.devnull, os.O_WRONLY)
        self._master: Any = None

    # -- Host ---------------------------------------------------------------------------

    def track_pid(self, pid: int, owner: Any) -> None:
        self.pids[pid] = owner

    def forget_pid(self, pid: int) -> None:
        self.pids.pop(pid, None)

    def changed(self) -> None:
        self.changes += 1

    def output_fd(self, program: str) -> int:
        return self._devnull

    # -- driving ------------------------------------------------------------------------

    def attach(self, master: Any) -> None:
        """Serve a real Master built with this world's processes and clock."""
        self._master = master
        self.loop = master.loop

    def run(self, rounds: int = 40) -> None:
        """Let every message in flight be handled, both ways, and due timers fire."""
        for _ in range(rounds):
            for leader in list(self.leaders):
                leader.serve()
            self.loop.run_once(max_wait=0)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run()

    def new_pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    # -- finding the fakes --------------------------------------------------------------

    def live_leaders(self) -> list[FakeLeader]:
        return [leader for leader in self.leaders if not leader.exited]

    def leader(self) -> FakeLeader:
        """The only live leader (the test asserts there is exactly one)."""
        live = self.live_leaders()
        assert len(live) == 1, f"{len(live)} live leaders"
        return live[0]

    def workers(self) -> list[FakeWorker]:
        return [w for leader in self.leaders for w in leader.workers.values()]

    def worker(self, slot: int) -> FakeWorker:
        found = [w for w in self.workers() if w.slot == slot]
        assert len(found) == 1, f"{len(found)} live workers in slot {slot}"
        return found[0]

    def find(self, pid: int) -> FakeWorker | None:
        return next((w for w in self.workers() if w.pid == pid), None)

    # -- what processes do ----------------------------------------------------------------

    def obey(self, pid: int, sig: int) -> None:
        worker = self.find(pid)
        if worker is not None:
            if sig == signal.SIGTERM:
                worker.exit(0, reason="stopped")
            elif sig == signal.SIGKILL:
                worker.exit(sig=signal.SIGKILL)
            return
        leader = next((x for x in self.live_leaders() if x.pid == pid), None)
        if leader is not None and sig == signal.SIGKILL:
            for worker in list(leader.workers.values()):
                worker.exit(sig=signal.SIGKILL)
            leader.exit(signal_status(signal.SIGKILL))

    def leader_exited(self, leader: FakeLeader, status: int) -> None:
        leader.sock.close()
        if self._master is not None:
            self.processes.exits.append((leader.pid, status))
            self._master.handle_chld()
            return
        owner = self.pids.pop(leader.pid, None)
        if owner is not None:
            owner.child_exited(leader.pid, status)
