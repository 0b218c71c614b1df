"""One program as the master runs it: its state, its leaders, and the program-level
decisions (start, stop, restart, reload, scale, apply new settings). Its workers live in a
WorkerPool (pool.py).

Every decision is taken in the master's single thread, from events: a message from the
leader, a message or EOF from a worker, an exit status, a timer.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import Any, Callable

from qsupervisor import ipc, logs, procutil
from qsupervisor.channel import Ev, Op
from qsupervisor.config import ProgramConfig
from qsupervisor.master import handover
from qsupervisor.master.autoscaler import Autoscaler
from qsupervisor.master.host import Host
from qsupervisor.master.loop import Timer, deadline
from qsupervisor.master.outbox import Outbox
from qsupervisor.master.pool import DEGRADED_GRACE, WorkerPool, backoff
from qsupervisor.master.process import LeaderProc, Slot, WorkerProc
from qsupervisor.master.queue_readings import QueueReadings
from qsupervisor.master.totals import ProgramTotals
from qsupervisor.states import ProgramState, WorkerState, transition

log = logs.get("qsupervisor.master")

W = WorkerState
P = ProgramState


class ProgramRuntime:
    def __init__(self, config: ProgramConfig, host: Host,
                 totals: ProgramTotals | None = None) -> None:
        self.config = config
        self.host = host
        self.state = P.STOPPED
        self.leader: LeaderProc | None = None
        self.old_leaders: list[LeaderProc] = []
        self.pending_leader: LeaderProc | None = None  # a replacement importing its preload
        self.pool = WorkerPool(self, host, config.workers, totals)
        self.error: str | None = None  # last leader/preload failure, for status
        self.leader_failures = 0
        self._leader_timer: Timer | None = None
        self.start_when_stopped = False  # restart, or start during a stop
        self._readings = QueueReadings(host.loop.clock)
        self.autoscaler = Autoscaler(self, host)

    @property
    def name(self) -> str:
        return self.config.name

    def _log(self, event: str, **kw: Any) -> None:
        kw.setdefault("program", self.name)
        log.info(event, **kw)

    # -- queries (the pool's answers, for status and the commands) ------------------------

    @property
    def desired(self) -> int:
        return self.pool.desired

    @property
    def running(self) -> bool:
        return self.state is P.RUNNING

    @property
    def stopped(self) -> bool:
        return self.state in (P.STOPPED, P.FATAL)

    def spawning_leader(self) -> LeaderProc | None:
        if self.state is not P.RUNNING or self.leader is None or not self.leader.ready:
            return None
        return self.leader

    def workers(self) -> Iterator[WorkerProc]:
        return self.pool.workers()

    def live_workers(self) -> list[WorkerProc]:
        return self.pool.live()

    def draining(self) -> list[WorkerProc]:
        return self.pool.draining

    def superseded(self) -> set[int]:
        return self.pool.superseded()

    def slot(self, index: int) -> Slot | None:
        return self.pool.slot(index)

    def serving(self) -> int:
        return self.pool.serving()

    def consuming(self) -> int:
        return self.pool.consuming()

    def degraded(self) -> str | None:
        """Why the running program is degraded: fewer consumers than workers for longer
        than DEGRADED_GRACE; None when it is not."""
        short_for = self.pool.short_for()
        if short_for < DEGRADED_GRACE:
            return None
        return (f"{self.pool.consuming()} of {self.desired} workers consuming "
                f"for {short_for:.0f}s")

    def recent_exits(self) -> list[tuple[int, int, int]]:
        return self.pool.recent_exits()

    def steady(self) -> bool:
        """Nothing starting or draining and every slot decided: the end of a reload,
        start or scale."""
        if self.pending_leader is not None:
            return False
        if self.state is not P.RUNNING:
            return self.state in (P.STOPPED, P.FATAL) and not self.pool.draining
        return self.pool.steady()

    def problems(self) -> list[str]:
        """What went wrong, for the reply to a command that waited."""
        return ([self.error] if self.error else []) + self.pool.problems()

    # -- program-level commands ---------------------------------------------------------

    def start(self) -> None:
        if self.state in (P.STOPPED, P.FATAL):
            self.error = None
            self.leader_failures = 0
            self.pool.reset_failures()
            transition(self, P.STARTING, self._log, program=self.name)
            self._spawn_leader()
            self.autoscaler.arm()
        elif self.state is P.RUNNING:
            self.pool.revive_fatal()
            self.pool.fill()
        elif self.state is P.STOPPING:
            self.start_when_stopped = True

    def restart(self) -> None:
        if self.state in (P.STOPPED, P.FATAL):
            self.start()
        else:
            self.stop("restart", then_start=True)

    def stop(self, reason: str = "stop", then_start: bool = False) -> None:
        # Set before stopping: a program with nothing running stops synchronously, and
        # must then start again at once.
        self.start_when_stopped = then_start
        self.error = None  # whatever failed before is moot once the operator stops it
        if self.state is P.STOPPED:
            return
        if self._leader_timer is not None:
            self._leader_timer.cancel()
            self._leader_timer = None
        if self.state is not P.STOPPING:
            transition(self, P.STOPPING, self._log, program=self.name)
        self.pool.stop_all(reason)
        if self.pending_leader is not None:
            self._retire(self.pending_leader)
            self.pending_leader = None
        self._maybe_stopped()

    def reload(self, preload: bool) -> None:
        """Rolling replacement: new workers first, each old one stops when its successor
        is RUNNING. With `preload`, a new leader imports the preload list first."""
        if self.state is not P.RUNNING:
            self.start()
            return
        if preload or self.leader is None:
            if self.pending_leader is not None:  # a reload --preload during another one
                self._retire(self.pending_leader)
                self.pending_leader = None
            self._spawn_leader(replacing=True)
        else:
            self.pool.roll()

    def scale(self, workers: int) -> None:
        """A count from the operator; an autoscaled program is pinned at it."""
        self.autoscaler.pin(workers)
        if self.state is P.RUNNING and workers < self.pool.desired:
            # The operator's scale-down drains as the autoscaler's does: idle workers
            # first, a busy one only when no other is left, and it finishes its job.
            self.pool.shrink_idle_first(workers)
            return
        self.pool.desired = workers
        if self.state is P.RUNNING:
            self.pool.fill()

    def scale_auto(self) -> None:
        """`scale --auto`: the autoscaler decides again from the current count."""
        self.autoscaler.pin(None)
        self.autoscaler.arm()

    def apply_bounds(self, config: ProgramConfig) -> None:
        """`update` changed only the count, the bounds or the autoscale settings: applied
        in place, the bounds at once."""
        self.config = config
        if config.autoscaled:
            self.autoscaler.configured()
        else:
            self.scale(config.workers)

    def apply_config(self, config: ProgramConfig) -> None:
        """A changed program: new settings reach a new leader, then a rolling reload (an
        autoscaled program keeps its current count, within the new bounds)."""
        self.config = config
        self.pool.desired = self.autoscaler.start_count(config.workers)
        self.autoscaler.configured()
        if self.state is P.RUNNING:
            self.reload(preload=True)
        elif self.state is P.STARTING:
            # The leader importing now was forked with the old settings: replace it.
            if self._leader_timer is not None:
                self._leader_timer.cancel()
                self._leader_timer = None
            if self.leader is not None:
                self._retire(self.leader)
                self.leader = None
            self._spawn_leader()
        elif self.state is P.FATAL:
            self.start()  # the new settings are the operator's attempt at a fix

    def signal_workers(self, sig: int) -> list[int]:
        pids = [w.pid for w in self.live_workers() if w.pid is not None]
        for pid in pids:
            self.host.processes.signal(pid, sig)
        return pids

    # -- leaders ------------------------------------------------------------------------

    def _spawn_leader(self, replacing: bool = False) -> None:
        master_end, leader_end = ipc.socketpair()
        try:
            pid = self.host.processes.start_leader(self.config, self.host.daemon,
                                                   self.host.log_format, leader_end,
                                                   self.host.output_fd(self.name))
        except OSError:
            master_end.close()
            raise
        finally:
            leader_end.close()
        proc = self._adopt_leader(pid, master_end, self.host.loop.clock.time())
        if replacing:
            self.pending_leader = proc
        else:
            self.leader = proc
        self._log("leader started", leader_pid=pid)

    def _adopt_leader(self, pid: int, sock: socket.socket, started: float) -> LeaderProc:
        # Non-blocking: a wedged leader is killed (_leader_wedged), never waited on.
        # Killed from the loop, not from inside the send that found the outbox full.
        outbox = Outbox(sock, self.host.loop,
                        lambda: self.host.loop.call_later(0, lambda: self._leader_wedged(proc)))
        proc = LeaderProc(pid=pid, sock=sock, started=started, outbox=outbox)
        self.host.track_pid(pid, self)
        self.host.loop.add_reader(sock, lambda: self._on_leader_message(proc))
        return proc

    def _on_leader_message(self, proc: LeaderProc) -> bool:
        """Act on one message; False at end of file."""
        try:
            msg = ipc.recv_message(proc.sock)
        except BlockingIOError:
            return True
        if msg is None:
            self.host.loop.remove_reader(proc.sock)
            return False
        event = msg.get("ev")
        if event == Ev.PRELOAD_FILES:
            proc.files.update({path: mtime for path, mtime in msg.get("files", [])})
        elif event == Ev.READY:
            version = msg.get("version")
            proc.version = version if isinstance(version, str) else None
            self._on_leader_ready(proc)
        elif event in (Ev.PRELOAD_FAILED, Ev.TOPOLOGY_FAILED):
            what = "preload" if event == Ev.PRELOAD_FAILED else "topology"
            self._on_leader_failed(proc, what, str(msg.get("error")))
        elif event == Ev.WAITING:
            self.error = f"waiting for the broker: {msg.get('error')}"
        elif event == Ev.QUEUE_KEPT:
            log.warning("queue kept as an earlier qsupervisor declared it", program=self.name,
                        queue=msg.get("queue"), why=msg.get("why"))
        elif event == Ev.QUEUE_STATS:
            self._readings.answered(msg)
        elif event == Ev.SPAWNED:
            self.pool.on_spawned(int(msg["wid"]), int(msg["pid"]))
        elif event == Ev.SPAWN_FAILED:
            self.pool.on_spawn_failed(int(msg["wid"]), str(msg.get("error")))
        elif event == Ev.EXITED:
            self.host.forget_pid(int(msg["pid"]))
            self.pool.on_exit(int(msg["pid"]), int(msg["status"]))
        self.host.changed()
        return True

    def _on_leader_ready(self, proc: LeaderProc) -> None:
        proc.ready = True
        self.leader_failures = 0
        if proc is self.pending_leader:
            old, self.leader, self.pending_leader = self.leader, proc, None
            if old is not None:
                self._retire(old)
            self.error = None
            self.pool.roll()
        elif proc is self.leader:
            self.error = None
            if self.state is P.STARTING:
                transition(self, P.RUNNING, self._log, program=self.name)
            self.pool.fill()

    def _on_leader_failed(self, proc: LeaderProc, what: str, error: str) -> None:
        """The leader could not import its preload list, or the broker refused the
        program's queues: final until the operator acts."""
        self.error = f"{what} failed: {error}"
        log.error(f"{what} failed", program=self.name, leader_pid=proc.pid, error=error)
        if proc is self.pending_leader:
            # A failed reload --preload leaves the running leader and workers alone.
            self.pending_leader = None
        elif proc is self.leader:
            self.leader = None
            if self.state is P.STARTING:
                transition(self, P.FATAL, self._log, program=self.name, error=error)

    def _retire(self, proc: LeaderProc) -> None:
        """The leader exits once its last worker has: it alone can reap them."""
        if proc not in self.old_leaders:
            self.old_leaders.append(proc)
        try:
            proc.outbox.send({"op": Op.RETIRE})
        except OSError:
            pass

    def child_exited(self, pid: int, status: int) -> None:
        """Called by the master's reaper: leaders are the master's own children (and so
        are orphaned workers it adopted as subreaper)."""
        proc = next((p for p in [self.leader, self.pending_leader, *self.old_leaders]
                     if p is not None and p.pid == pid), None)
        if proc is None:
            self.pool.on_exit(pid, status)  # an orphaned worker we adopted
            return
        self._read_last_words(proc)
        self.host.loop.remove_reader(proc.sock)
        proc.outbox.close()
        proc.sock.close()
        if proc in self.old_leaders:
            self.old_leaders.remove(proc)
        if proc is self.pending_leader:
            self.pending_leader = None
            if self.error is None:
                self.error = f"new leader died during preload ({procutil.describe_status(status)})"
        elif proc is self.leader:
            self.leader = None
            self._readings.forget()  # asked of this leader; nobody will answer
            self._on_leader_lost(proc, status)
        self.pool.leader_gone(proc)  # after the leader is forgotten: nothing spawns on it
        self._maybe_stopped()
        self.host.changed()

    def _read_last_words(self, proc: LeaderProc) -> None:
        """Handle what the leader sent before it exited: its exit may be reaped before its
        socket is read, and the exits of its last workers are in there."""
        while ipc.readable(proc.sock) and self._on_leader_message(proc):
            pass

    def _on_leader_lost(self, proc: LeaderProc, status: int) -> None:
        if self.state in (P.STOPPING, P.STOPPED, P.FATAL):
            return
        how = procutil.describe_status(status)
        log.error("leader died; its workers stop with it", program=self.name,
                  leader_pid=proc.pid, exit=how)
        for worker in self.live_workers():
            if worker.leader is proc and worker.state is not W.STOPPING:
                self.pool.stop_worker(worker, "leader died")
        self.leader_failures += 1
        if self.state is P.RUNNING:
            transition(self, P.STARTING, self._log, program=self.name)
        if self.leader_failures >= self.config.start_retries:
            self.error = f"leader died {self.leader_failures} times in a row (last: {how})"
            transition(self, P.FATAL, self._log, program=self.name, error=self.error)
            return
        delay = backoff(self.leader_failures)
        self._leader_timer = self.host.loop.call_later(delay, self._respawn_leader)

    def _respawn_leader(self) -> None:
        self._leader_timer = None
        if self.state is P.STARTING and self.leader is None:
            self._spawn_leader()

    # -- handing over through a re-exec (handover.py) ---------------------------------

    def _leaders(self) -> list[LeaderProc]:
        found = [p for p in (self.leader, self.pending_leader) if p is not None]
        return found + [p for p in self.old_leaders if p not in found]

    def export_state(self) -> dict[str, Any]:
        leaders = self._leaders()

        def ref(proc: LeaderProc | None) -> int | None:
            return leaders.index(proc) if proc is not None else None

        return {
            "name": self.name, "state": self.state.value,
            "leaders": [handover.leader_state(p) for p in leaders],
            "leader": ref(self.leader), "pending_leader": ref(self.pending_leader),
            "old_leaders": [leaders.index(p) for p in self.old_leaders],
            "error": self.error, "leader_failures": self.leader_failures,
            "leader_timer_at": deadline(self._leader_timer),
            "start_when_stopped": self.start_when_stopped,
            "autoscaler": self.autoscaler.export_state(),
            "pool": self.pool.export_state(leaders),
        }

    def load_state(self, data: dict[str, Any]) -> None:
        self.state = P(data["state"])
        leaders = []
        for item in data["leaders"]:
            proc = self._adopt_leader(int(item["pid"]),
                                      handover.adopt_socket(int(item["sock"])),
                                      float(item["started"]))
            proc.ready, proc.version = bool(item["ready"]), item["version"]
            proc.files = {str(path): float(mtime) for path, mtime in item["files"]}
            leaders.append(proc)

        def ref(index: int | None) -> LeaderProc | None:
            return leaders[index] if index is not None else None

        self.leader, self.pending_leader = ref(data["leader"]), ref(data["pending_leader"])
        self.old_leaders = [leaders[i] for i in data["old_leaders"]]
        self.error, self.leader_failures = data["error"], int(data["leader_failures"])
        self.start_when_stopped = bool(data["start_when_stopped"])
        if data["leader_timer_at"] is not None:
            self._leader_timer = self.host.loop.call_at(float(data["leader_timer_at"]),
                                                        self._respawn_leader)
        self.pool.load_state(data["pool"], leaders)
        self.autoscaler.load_state(data["autoscaler"])

    def settled(self) -> str | None:
        """Why this program cannot be handed over right now (None: it can)."""
        for proc in self._leaders():
            if len(proc.outbox):
                return f"{self.name}: messages to leader pid {proc.pid} wait to be sent"
        if self._readings.in_flight():
            # A `status` waits for it (a second at most): answered before the exec, it
            # needs no error, and a monitoring loop polling status never sees one.
            return f"{self.name}: a queue reading is awaited from its leader"
        why = self.pool.settled()
        return f"{self.name}: {why}" if why else None

    def workers_changed(self) -> None:
        """The pool lost a worker: a stopping program may now be stopped."""
        self._maybe_stopped()

    def kill_all(self) -> None:
        """Fast shutdown: unacked messages go back to the queue with the connections."""
        self.pool.kill_all()
        for proc in [self.leader, self.pending_leader, *self.old_leaders]:
            if proc is not None:
                self.host.processes.signal(proc.pid, signal.SIGKILL)

    def request_queue_stats(self, callback: Callable[[dict[str, Any]], None]) -> bool:
        """Ask the leader for the queue depths; False if there is no leader to ask."""
        if self.leader is None or not self.leader.ready:
            return False
        return self._readings.ask(self.leader.outbox, callback)

    def _leader_wedged(self, proc: LeaderProc) -> None:
        """It stopped reading its channel with OUTBOX_LIMIT messages waiting: kill it, and
        its death is handled as any leader's."""
        if proc.sock.fileno() == -1:
            return  # reaped since: its pid may be another process's now
        log.error("leader not reading its channel; killing it", program=self.name,
                  leader_pid=proc.pid, waiting=len(proc.outbox))
        self.host.processes.signal(proc.pid, signal.SIGKILL)

    def _maybe_stopped(self) -> None:
        if self.state is not P.STOPPING or self.live_workers():
            return
        for proc in [self.leader, self.pending_leader]:
            if proc is not None:
                self._retire(proc)
        self.leader = self.pending_leader = None
        if not self.old_leaders:
            transition(self, P.STOPPED, self._log, program=self.name)
            self.host.changed()
            if self.start_when_stopped:
                self.start_when_stopped = False
                self.start()
