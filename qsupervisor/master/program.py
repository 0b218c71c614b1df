"""One program as the master runs it: its leader, its worker slots and the decisions about
them (start, stop, recycle, back off, roll, scale).

Every decision is taken here, in the master's single thread, from events: a message from
the leader, a message or EOF from a worker, an exit status, a timer.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any, Dict, Iterator, List, Optional, Protocol

from qsupervisor import ipc, leader, logs, procutil
from qsupervisor.config import DaemonConfig, ProgramConfig
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.process import LeaderProc, Slot, WorkerProc
from qsupervisor.states import ProgramState, WorkerState, transition
from qsupervisor.worker import stats as worker_stats
from qsupervisor.worker.main import EXIT_HANDLER_IMPORT

log = logs.get("qsupervisor.master")

W = WorkerState
P = ProgramState

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0  # a worker RUNNING this long has started cleanly; its failures reset


class Host(Protocol):
    """What a program needs from the master."""

    loop: EventLoop
    daemon: DaemonConfig
    log_format: str

    def track_pid(self, pid: int, owner: "ProgramRuntime") -> None: ...
    def forget_pid(self, pid: int) -> None: ...
    def changed(self) -> None: ...
    def output_fd(self, program: str) -> int: ...


class ProgramRuntime:
    def __init__(self, config: ProgramConfig, host: Host) -> None:
        self.config = config
        self.host = host
        self.state = P.STOPPED
        self.leader: Optional[LeaderProc] = None
        self.old_leaders: List[LeaderProc] = []
        self.pending_leader: Optional[LeaderProc] = None  # a replacement importing its preload
        self.slots: Dict[int, Slot] = {}
        self.draining: List[WorkerProc] = []
        self.desired = config.workers
        self.generation = 0
        self.error: Optional[str] = None  # last leader/preload failure, for status
        self.leader_failures = 0
        self._leader_timer: Any = None
        self.start_when_stopped = False  # restart, or start during a stop
        self._next_wid = 0
        self._pending_spawns: Dict[int, WorkerProc] = {}

    @property
    def name(self) -> str:
        return self.config.name

    def _log(self, event: str, **kw: Any) -> None:
        kw.setdefault("program", self.name)
        log.info(event, **kw)

    # -- queries ----------------------------------------------------------------------

    def workers(self) -> Iterator[WorkerProc]:
        """Every worker record status should show: the slots' current ones, then those
        draining."""
        for index in sorted(self.slots):
            if self.slots[index].worker is not None:
                yield self.slots[index].worker  # type: ignore[misc]
        for index in sorted(self.slots):
            if self.slots[index].predecessor is not None:
                yield self.slots[index].predecessor  # type: ignore[misc]
        yield from self.draining

    def live_workers(self) -> List[WorkerProc]:
        return [w for w in self.all_known_workers() if w.alive]

    def all_known_workers(self) -> List[WorkerProc]:
        found = [s.worker for s in self.slots.values() if s.worker is not None]
        found += [s.predecessor for s in self.slots.values() if s.predecessor is not None]
        found += self.draining
        unique: Dict[int, WorkerProc] = {id(w): w for w in found}
        return list(unique.values())

    def settled(self) -> bool:
        """Nothing starting or draining and every slot decided: the end of a reload,
        start or scale. A FATAL slot is decided (its predecessor, if any, runs on)."""
        if self.pending_leader is not None or self.draining:
            return False
        if self.state is not P.RUNNING:
            return self.state in (P.STOPPED, P.FATAL)
        for index in range(self.desired):
            slot = self.slots.get(index)
            if slot is None or slot.worker is None:
                return False
            if slot.worker.state is W.FATAL:
                continue
            if slot.worker.state is not W.RUNNING or slot.predecessor is not None:
                return False
        return True

    def problems(self) -> List[str]:
        """What went wrong, for the reply to a command that waited."""
        found = [self.error] if self.error else []
        for index in range(self.desired):
            worker = self.slots[index].worker if index in self.slots else None
            if worker is not None and worker.state is W.FATAL:
                found.append(f"worker {index}: {worker.exit_error or worker.last_exit}")
        return found

    # -- program-level commands ---------------------------------------------------------

    def start(self) -> None:
        if self.state in (P.STOPPED, P.FATAL):
            self.error = None
            self.leader_failures = 0
            for slot in self.slots.values():
                slot.failures = slot.start_failures = 0
            transition(self, P.STARTING, self._log, program=self.name)
            self._spawn_leader()
        elif self.state is P.RUNNING:
            self._revive_fatal_slots()
            self._fill()
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
        for slot in self.slots.values():
            self._cancel_backoff(slot)
            if slot.worker is not None and slot.worker.state in (W.BACKOFF, W.FATAL):
                transition(slot.worker, W.EXITED)
        for worker in self.live_workers():
            self.stop_worker(worker, reason)
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
        self.generation += 1
        if preload or self.leader is None:
            if self.pending_leader is not None:  # a reload --preload during another one
                self._retire(self.pending_leader)
                self.pending_leader = None
            self._spawn_leader(replacing=True)
        else:
            self._roll()

    def scale(self, workers: int) -> None:
        self.desired = workers
        if self.state is P.RUNNING:
            self._fill()

    def apply_config(self, config: ProgramConfig) -> None:
        """A changed program: new settings reach a new leader, then a rolling reload."""
        self.config = config
        self.desired = config.workers
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

    def signal_workers(self, sig: int) -> List[int]:
        pids = [w.pid for w in self.live_workers() if w.pid is not None]
        for pid in pids:
            _kill(pid, sig)
        return pids

    # -- leaders ------------------------------------------------------------------------

    def _spawn_leader(self, replacing: bool = False) -> None:
        master_end, leader_end = ipc.socketpair()
        spec = leader.LeaderSpec(self.config, self.host.daemon, self.host.log_format)
        output_fd = self.host.output_fd(self.name)
        pid = os.fork()
        if pid == 0:  # the leader
            leader.run(spec, leader_end, output_fd)
        leader_end.close()
        master_end.settimeout(5.0)  # a wedged leader cannot block the master forever
        proc = LeaderProc(pid=pid, sock=master_end, generation=self.generation)
        self.host.track_pid(pid, self)
        self.host.loop.add_reader(master_end, lambda: self._on_leader_message(proc))
        if replacing:
            self.pending_leader = proc
        else:
            self.leader = proc
        self._log("leader started", leader_pid=pid)

    def _on_leader_message(self, proc: LeaderProc) -> None:
        try:
            msg, fds = ipc.recv(proc.sock)
        except OSError:
            msg, fds = None, []
        for fd in fds:
            os.close(fd)
        if msg is None:
            self.host.loop.remove_reader(proc.sock)
            return
        event = msg.get("ev")
        if event == "preload_files":
            proc.files.update({path: mtime for path, mtime in msg.get("files", [])})
        elif event == "ready":
            self._on_leader_ready(proc)
        elif event == "preload_failed":
            self._on_preload_failed(proc, str(msg.get("error")))
        elif event == "spawned":
            self._on_spawned(int(msg["wid"]), int(msg["pid"]))
        elif event == "spawn_failed":
            worker = self._pending_spawns.pop(int(msg["wid"]), None)
            if worker is not None:
                self._on_worker_gone(worker, None, f"fork failed: {msg.get('error')}")
        elif event == "exited":
            self.host.forget_pid(int(msg["pid"]))
            self._worker_exited_pid(int(msg["pid"]), int(msg["status"]))
        self.host.changed()

    def _on_leader_ready(self, proc: LeaderProc) -> None:
        proc.ready = True
        self.leader_failures = 0
        if proc is self.pending_leader:
            old, self.leader, self.pending_leader = self.leader, proc, None
            if old is not None:
                self._retire(old)
            self.error = None
            self._roll()
        elif proc is self.leader:
            self.error = None
            if self.state is P.STARTING:
                transition(self, P.RUNNING, self._log, program=self.name)
            self._fill()

    def _on_preload_failed(self, proc: LeaderProc, error: str) -> None:
        self.error = f"preload failed: {error}"
        log.error("preload failed", program=self.name, leader_pid=proc.pid, error=error)
        if proc is self.pending_leader:
            # A failed reload --preload leaves the running leader and workers alone.
            self.pending_leader = None
        elif proc is self.leader:
            self.leader = None
            if self.state is P.STARTING:
                transition(self, P.FATAL, self._log, program=self.name, error=error)

    def _retire(self, proc: LeaderProc) -> None:
        """The leader exits once its last worker has: it alone can reap them."""
        proc.retiring = True
        if proc not in self.old_leaders:
            self.old_leaders.append(proc)
        try:
            ipc.send(proc.sock, {"op": "retire"})
        except OSError:
            pass

    def leader_exited(self, pid: int, status: int) -> None:
        """Called by the master's reaper: leaders are the master's own children."""
        proc = next((p for p in [self.leader, self.pending_leader, *self.old_leaders]
                     if p is not None and p.pid == pid), None)
        if proc is None:
            self._worker_exited_pid(pid, status)  # an orphaned worker we adopted
            return
        proc.status = status
        self.host.loop.remove_reader(proc.sock)
        proc.sock.close()
        if proc in self.old_leaders:
            self.old_leaders.remove(proc)
        if proc is self.pending_leader:
            self.pending_leader = None
            if self.error is None:
                self.error = f"new leader died during preload ({procutil.describe_status(status)})"
        elif proc is self.leader:
            self.leader = None
            self._on_leader_lost(proc, status)
        self._maybe_stopped()
        self.host.changed()

    def _on_leader_lost(self, proc: LeaderProc, status: int) -> None:
        if self.state in (P.STOPPING, P.STOPPED, P.FATAL):
            return
        how = procutil.describe_status(status)
        log.error("leader died; its workers stop with it", program=self.name,
                  leader_pid=proc.pid, exit=how)
        for worker in self.live_workers():
            if worker.leader is proc and worker.state is not W.STOPPING:
                self.stop_worker(worker, "leader died")
        self.leader_failures += 1
        if self.state is P.RUNNING:
            transition(self, P.STARTING, self._log, program=self.name)
        if self.leader_failures >= self.config.start_retries:
            self.error = f"leader died {self.leader_failures} times in a row (last: {how})"
            transition(self, P.FATAL, self._log, program=self.name, error=self.error)
            return
        delay = _backoff(self.leader_failures)
        self._leader_timer = self.host.loop.call_later(delay, self._respawn_leader)

    def _respawn_leader(self) -> None:
        self._leader_timer = None
        if self.state is P.STARTING and self.leader is None:
            self._spawn_leader()

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

    # -- workers --------------------------------------------------------------------------

    def _fill(self) -> None:
        """Bring the slots in line with `desired`: start the missing, drain the extra."""
        for index in range(self.desired):
            slot = self.slots.setdefault(index, Slot(index))
            worker = slot.worker
            if worker is None or worker.state is W.EXITED:
                self._spawn_worker(slot)
        for index, slot in sorted(self.slots.items()):
            if index >= self.desired:
                self._cancel_backoff(slot)
                for worker in (slot.worker, slot.predecessor):
                    self._drain(worker, "scale")
                del self.slots[index]

    def _roll(self) -> None:
        for index in range(self.desired):
            slot = self.slots.setdefault(index, Slot(index))
            old = slot.worker
            self._cancel_backoff(slot)
            slot.failures = slot.start_failures = 0
            if old is not None and old.alive and old.state is not W.STOPPING:
                if slot.predecessor is None:
                    slot.predecessor = old
                else:  # a reload during a reload: the half-started one goes
                    self._drain(old, "reload")
            elif old is not None and old.alive:
                self.draining.append(old)  # stopping already; no longer the slot's
            self._spawn_worker(slot)
        self._fill()

    def _revive_fatal_slots(self) -> None:
        for slot in self.slots.values():
            if slot.worker is not None and slot.worker.state is W.FATAL:
                slot.failures = slot.start_failures = 0
                transition(slot.worker, W.EXITED)

    def _spawn_worker(self, slot: Slot) -> None:
        current = self.leader
        if current is None or not current.ready or self.state is not P.RUNNING:
            return  # the leader's "ready" calls _fill again
        self._next_wid += 1
        jitter = self.config.max_jobs_jitter
        max_jobs = self.config.max_jobs + (random.randint(0, jitter) if self.config.max_jobs else 0)
        worker = WorkerProc(wid=self._next_wid, slot=slot.index, leader=current, max_jobs=max_jobs)
        master_end, worker_end = ipc.socketpair()
        stats_fd = worker_stats.create()
        try:
            ipc.send(current.sock, {"op": "spawn", "wid": worker.wid, "slot": slot.index,
                                    "max_jobs": max_jobs}, [worker_end.fileno(), stats_fd])
        except OSError as exc:
            master_end.close()
            os.close(stats_fd)
            log.error("cannot reach the leader", program=self.name, error=str(exc))
            return
        finally:
            worker_end.close()
        worker.channel = master_end
        worker.stats = worker_stats.Stats(stats_fd)
        os.close(stats_fd)  # the mapping stays valid
        self.host.loop.add_reader(master_end, lambda: self._on_worker_message(worker))
        self._pending_spawns[worker.wid] = worker
        slot.worker = worker

    def _on_spawned(self, wid: int, pid: int) -> None:
        worker = self._pending_spawns.pop(wid, None)
        if worker is None:
            return
        worker.pid = pid
        self.host.track_pid(pid, self)
        logs.get().info("worker started", program=self.name, slot=worker.slot, pid=pid)
        if worker.state is W.STOPPING:  # a stop arrived before the pid did
            _kill(pid, signal.SIGTERM)

    def _on_worker_message(self, worker: WorkerProc) -> None:
        assert worker.channel is not None
        try:
            msg, fds = ipc.recv(worker.channel)
        except OSError:
            msg, fds = None, []
        for fd in fds:
            os.close(fd)
        if msg is None:
            self._close_channel(worker)
            return
        event = msg.get("ev")
        if event == "ready" and worker.state is W.STARTING:
            worker.ready_at = time.monotonic()
            worker.broker_error = None
            transition(worker, W.RUNNING, log.info, program=self.name, slot=worker.slot,
                       pid=worker.pid)
            self._on_worker_running(worker)
        elif event == "broker_lost":
            worker.broker_error = str(msg.get("error"))
        elif event == "exiting":
            worker.exit_reason = str(msg.get("reason"))
            worker.exit_error = msg.get("error")
        self.host.changed()

    def _on_worker_running(self, worker: WorkerProc) -> None:
        slot = self.slots.get(worker.slot)
        if slot is None or slot.worker is not worker:
            return
        slot.start_failures = 0
        if slot.predecessor is not None:
            predecessor, slot.predecessor = slot.predecessor, None
            self._drain(predecessor, "reload")

    def _drain(self, worker: Optional[WorkerProc], reason: str) -> None:
        """Detach a worker from its slot and stop it gracefully."""
        if worker is None or not worker.alive:
            return
        if worker not in self.draining:
            self.draining.append(worker)
        self.stop_worker(worker, reason)

    def stop_worker(self, worker: WorkerProc, reason: str) -> None:
        if not worker.alive or worker.state is W.STOPPING:
            return
        worker.stop_reason = reason
        transition(worker, W.STOPPING, log.info, program=self.name, slot=worker.slot,
                   pid=worker.pid, reason=reason)
        if worker.pid is not None:
            _kill(worker.pid, signal.SIGTERM)
        worker.kill_timer = self.host.loop.call_later(
            self.config.stop_timeout, lambda: self._kill_worker(worker))

    def _kill_worker(self, worker: WorkerProc) -> None:
        if worker.alive and worker.pid is not None:
            log.warning("stop_timeout passed; killing the worker", program=self.name,
                        slot=worker.slot, pid=worker.pid)
            worker.killed = True
            _kill(worker.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """Fast shutdown: unacked messages go back to the queue with the connections."""
        for worker in self.live_workers():
            if worker.pid is not None:
                _kill(worker.pid, signal.SIGKILL)
        for proc in [self.leader, self.pending_leader, *self.old_leaders]:
            if proc is not None:
                _kill(proc.pid, signal.SIGKILL)

    def _worker_exited_pid(self, pid: int, status: int) -> None:
        worker = next((w for w in self.all_known_workers() if w.pid == pid), None)
        if worker is not None:
            self._on_worker_gone(worker, status, procutil.describe_status(status))

    def _on_worker_gone(self, worker: WorkerProc, status: Optional[int], how: str) -> None:
        if not worker.alive:
            return
        if worker.kill_timer is not None:
            worker.kill_timer.cancel()
        self._close_channel(worker)
        clean = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        worker.last_exit = _exit_summary(worker, clean, how)
        transition(worker, W.EXITED, log.info, program=self.name, slot=worker.slot,
                   pid=worker.pid, exit=worker.last_exit)
        if worker in self.draining:
            self.draining.remove(worker)
        slot = self.slots.get(worker.slot)
        if slot is not None and slot.predecessor is worker:
            slot.predecessor = None
        if slot is not None and slot.worker is worker:
            slot.last_exit = worker.last_exit
            self._after_slot_exit(slot, worker, clean, status)
        self._maybe_stopped()

    def _after_slot_exit(self, slot: Slot, worker: WorkerProc, clean: bool,
                         status: Optional[int]) -> None:
        if self.state is not P.RUNNING or slot.index >= self.desired:
            return  # the leader's "ready" (or a later start) fills the slot
        if worker.stop_reason:
            self._spawn_worker(slot)  # stopped for a reason that has passed (leader died)
            return
        if clean and worker.exit_reason:
            slot.restarts += 1  # recycled on purpose: replace at once, never a failure
            self._spawn_worker(slot)
            return
        if worker.ran_for() >= STABLE_AFTER:
            slot.failures = 0
        slot.failures += 1
        slot.restarts += 1
        never_ran = worker.ready_at is None
        if never_ran or (status is not None and os.WIFEXITED(status)
                         and os.WEXITSTATUS(status) == EXIT_HANDLER_IMPORT):
            slot.start_failures += 1
        if slot.start_failures >= self.config.start_retries:
            transition(worker, W.FATAL, log.error, program=self.name, slot=slot.index,
                       error=worker.exit_error or worker.last_exit,
                       hint="fix it, then: qsupervisorctl start " + self.name)
            return
        delay = _backoff(slot.failures)
        transition(worker, W.BACKOFF, log.warning, program=self.name, slot=slot.index,
                   pid=worker.pid, retry_in=delay)
        slot.backoff_timer = self.host.loop.call_later(delay, lambda: self._retry(slot, worker))

    def _retry(self, slot: Slot, worker: WorkerProc) -> None:
        slot.backoff_timer = None
        if slot.worker is worker and worker.state is W.BACKOFF and self.state is P.RUNNING:
            transition(worker, W.EXITED)
            self._spawn_worker(slot)
        self.host.changed()

    def _cancel_backoff(self, slot: Slot) -> None:
        if slot.backoff_timer is not None:
            slot.backoff_timer.cancel()
            slot.backoff_timer = None

    def _close_channel(self, worker: WorkerProc) -> None:
        if worker.channel is not None:
            self.host.loop.remove_reader(worker.channel)
            worker.channel.close()
            worker.channel = None


def _backoff(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** max(0, failures - 1))


def _exit_summary(worker: WorkerProc, clean: bool, how: str) -> str:
    if worker.killed:
        return f"killed: stop_timeout ({worker.stop_reason or 'stop'})"
    if worker.stop_reason:
        return f"stopped: {worker.stop_reason}" if clean else f"stopped: {worker.stop_reason} ({how})"
    if clean and worker.exit_reason:
        return f"recycled: {worker.exit_reason}"
    if worker.exit_error:
        return f"failed: {worker.exit_error}"
    return f"crashed: {how}"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


