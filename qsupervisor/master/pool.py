"""A program's workers as the master runs them: slots, spawning through the leader,
rolling replacement, exits and backoff; its job-timeout watchdog is watchdog.py.

The pool owns its slots and how many there should be (`desired`). The program
(program.py) owns the leader and the program's state; the pool sees it only through
`PoolOwner`: the settings, the leader to spawn from (None while the program does not run),
and a call when a worker is gone.
"""

from __future__ import annotations

import collections
import os
import random
import signal
from collections.abc import Iterator
from typing import Any

from qsupervisor import ipc, logs, procutil, stats_segment
from qsupervisor.channel import Ev, Op
from qsupervisor.master import handover
from qsupervisor.master.crashes import CrashLedger
from qsupervisor.master.exits import KILLED_FOR_TIMEOUT, Exit, ExitFacts, ExitKind, classify_exit
from qsupervisor.master.host import Host, PoolOwner
from qsupervisor.master.process import LeaderProc, Slot, WorkerProc
from qsupervisor.master.questions import CrashQuestions
from qsupervisor.master.totals import ProgramTotals, exit_reason
from qsupervisor.master.watchdog import JobWatchdog
from qsupervisor.states import WorkerState, transition
from qsupervisor.stats_segment import Ring, Snapshot

log = logs.get("qsupervisor.master")

W = WorkerState
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0  # a worker RUNNING this long has started cleanly; its failures reset
# A RUNNING program with fewer consumers than slots for this long is degraded. Short
# enough that a health check sees a lost node or a crash loop at once, long enough that a
# recycle or the start of a scale-up (a worker is consuming within a second) never shows.
DEGRADED_GRACE = 10.0
RECENT = 60.0  # seconds of exited workers' counters kept for the "last minute" figures


def backoff(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** max(0, failures - 1))


def _due(slot: Slot) -> float:
    """When a backing-off slot restarts (monotonic)."""
    assert slot.backoff_timer is not None
    return slot.backoff_timer.when


class WorkerPool:
    def __init__(self, owner: PoolOwner, host: Host, desired: int,
                 totals: ProgramTotals | None = None) -> None:
        self.program = owner
        self.host = host
        self.desired = desired  # how many slots the program should have
        self.slots: dict[int, Slot] = {}
        self.draining: list[WorkerProc] = []
        self.crashes = CrashLedger()
        self.questions = CrashQuestions(host, self.crashes, lambda: self.name, self.live)
        # Exited workers' per-second job counts, while they are in the last minute.
        self.recent: collections.deque[tuple[float, Ring]] = collections.deque()
        # Every job and exit counted, for the metrics endpoint: the master's, it outlives us.
        self.totals = totals if totals is not None else ProgramTotals()
        self._pending_spawns: dict[int, WorkerProc] = {}
        self._short_since: float | None = None  # monotonic; see track_capacity
        self._next_wid = 0
        self._watchdog = JobWatchdog(host, lambda: self.program.config.timeout, self.live,
                                     lambda worker: self._kill(worker, KILLED_FOR_TIMEOUT))

    @property
    def name(self) -> str:
        return self.program.name

    # -- queries ------------------------------------------------------------------------

    def workers(self) -> Iterator[WorkerProc]:
        """Every worker status shows: the slots' current ones, the ones they replace, then
        those draining."""
        for index in sorted(self.slots):
            if self.slots[index].worker is not None:
                yield self.slots[index].worker  # type: ignore[misc]
        for index in sorted(self.slots):
            if self.slots[index].predecessor is not None:
                yield self.slots[index].predecessor  # type: ignore[misc]
        yield from self.draining

    def all_known(self) -> list[WorkerProc]:
        found = [s.worker for s in self.slots.values() if s.worker is not None]
        found += [s.predecessor for s in self.slots.values() if s.predecessor is not None]
        found += self.draining
        return list({id(w): w for w in found}.values())

    def live(self) -> list[WorkerProc]:
        return [w for w in self.all_known() if w.alive]

    def recent_exits(self) -> list[tuple[int, int, int]]:
        """Done, failed and retried in the last minute by workers that have exited."""
        now = self.host.loop.clock.time()
        while self.recent and self.recent[0][0] < now - RECENT:
            self.recent.popleft()
        return [stats_segment.last_minute_of(ring, now) for _, ring in self.recent]

    def superseded(self) -> set[int]:
        """ids of the workers still consuming until their successor runs (a reload)."""
        return {id(s.predecessor) for s in self.slots.values() if s.predecessor is not None}

    def slot(self, index: int) -> Slot | None:
        return self.slots.get(index)

    def serving(self) -> int:
        """Slots with a RUNNING consumer: the current worker, or the one it is replacing."""
        serving = 0
        for index in range(self.desired):
            slot = self.slots.get(index)
            if slot is not None and any(w is not None and w.state is W.RUNNING
                                        for w in (slot.worker, slot.predecessor)):
                serving += 1
        return serving

    def consuming(self) -> int:
        """Slots with a consumer attached: the current worker, or the one it replaces."""
        count = 0
        for index in range(self.desired):
            slot = self.slots.get(index)
            if slot is not None and any(w is not None and w.consuming
                                        for w in (slot.worker, slot.predecessor)):
                count += 1
        return count

    def track_capacity(self) -> None:
        """Note when the running program first had fewer consumers than slots; called
        after everything that can change either."""
        if not self.program.running or self.consuming() >= self.desired:
            self._short_since = None
        elif self._short_since is None:
            self._short_since = self.host.loop.clock.monotonic()

    def short_for(self) -> float:
        """Seconds the running program has had fewer consumers than slots (0 if not)."""
        if self._short_since is None or not self.program.running:
            return 0.0
        return self.host.loop.clock.monotonic() - self._short_since

    def steady(self) -> bool:
        """Every slot decided: its worker RUNNING with nothing left to replace, or FATAL
        (its predecessor, if any, runs on); nothing draining."""
        if self.draining:
            return False
        for index in range(self.desired):
            slot = self.slots.get(index)
            if slot is None or slot.worker is None:
                return False
            if slot.worker.state is W.FATAL:
                continue
            if slot.worker.state is not W.RUNNING or slot.predecessor is not None:
                return False
        return True

    def problems(self) -> list[str]:
        found = []
        for index in range(self.desired):
            worker = self.slots[index].worker if index in self.slots else None
            if worker is not None and worker.state is W.FATAL:
                found.append(f"worker {index}: {worker.exit_error or worker.last_exit}")
        return found

    # -- shaping the pool ---------------------------------------------------------------

    def fill(self) -> None:
        """Bring the slots in line with `desired`: start the missing, drain the extra."""
        for index in range(self.desired):
            slot = self.slots.setdefault(index, Slot(index))
            if slot.worker is None or slot.worker.state is W.EXITED:
                self.spawn(slot)
        for index, slot in sorted(self.slots.items()):
            if index >= self.desired:
                self._cancel_backoff(slot)
                for worker in (slot.worker, slot.predecessor):
                    self.drain(worker, "scale")
                del self.slots[index]
        self._keep_one_coming()  # a leader replaced during a crash storm
        self._watchdog.arm()
        self.track_capacity()

    def shrink_idle_first(self, desired: int) -> None:
        """Scale down to `desired`, draining the slots whose workers are doing least: no
        live worker (crashed, backing off), then starting, then idle without prefetched
        messages, idle with them, and busy ones last (a busy one drained finishes its job
        first, as in a recycle). The slots kept move down to 0..desired-1 in their order,
        so the rest of the pool goes on seeing contiguous slots; a moved worker keeps the
        number it was started with in its process title."""
        if desired >= self.desired:
            return
        indices = [i for i in range(self.desired) if i in self.slots]
        leaving = sorted(indices, key=lambda i: (self._cost(self.slots[i]), -i))
        leaving = leaving[:self.desired - desired]
        order = [i for i in indices if i not in leaving] + sorted(leaving)
        moved = {new: self.slots[old] for new, old in enumerate(order)}
        for new, slot in moved.items():
            slot.index = new
            for worker in (slot.worker, slot.predecessor):
                if worker is not None:
                    worker.slot = new
        for index in indices:
            del self.slots[index]
        self.slots.update(moved)
        self.desired = desired
        self.fill()

    def _cost(self, slot: Slot) -> int:
        """How much work leaving costs: 0 for a slot with no live worker, 5 for a busy one
        or one in a reload's hand-over."""
        worker = slot.worker
        if slot.predecessor is not None:
            return 5
        if worker is None or not worker.alive:
            return 0
        if worker.state is W.STARTING:
            return 1
        snapshot = worker.stats.read() if worker.stats is not None else None
        if snapshot is None or worker.state is not W.RUNNING:
            return 2
        if snapshot.job_started is not None:
            return 5
        return 3 if snapshot.held else 2

    def busy_and_idle(self) -> tuple[int, int]:
        """The slots' consuming workers with a job in hand, and those without."""
        busy = idle = 0
        for index in range(self.desired):
            slot = self.slots.get(index)
            worker = slot.worker if slot is not None else None
            if worker is None or not worker.consuming or worker.stats is None:
                continue
            if worker.stats.read().job_started is not None:
                busy += 1
            else:
                idle += 1
        return busy, idle

    def roll(self) -> None:
        """Start a successor for every slot; each old worker stops once it runs."""
        for index in range(self.desired):
            slot = self.slots.setdefault(index, Slot(index))
            old = slot.worker
            self._cancel_backoff(slot)
            slot.failures = slot.start_failures = 0
            if old is not None and old.alive and old.state is not W.STOPPING:
                if slot.predecessor is None:
                    slot.predecessor = old
                else:  # a reload during a reload: the half-started one goes
                    self.drain(old, "reload")
            elif old is not None and old.alive:
                self.draining.append(old)  # stopping already; no longer the slot's
            self.spawn(slot)
        self.fill()

    def reset_failures(self) -> None:
        """A fresh start: earlier failures no longer count towards backoff or FATAL."""
        for slot in self.slots.values():
            slot.failures = slot.start_failures = 0

    def revive_fatal(self) -> None:
        for slot in self.slots.values():
            if slot.worker is not None and slot.worker.state is W.FATAL:
                slot.failures = slot.start_failures = 0
                transition(slot.worker, W.EXITED)

    def stop_all(self, reason: str) -> None:
        for slot in self.slots.values():
            self._cancel_backoff(slot)
            if slot.worker is not None and slot.worker.state in (W.BACKOFF, W.FATAL):
                transition(slot.worker, W.EXITED)
        for worker in self.live():
            self.stop_worker(worker, reason)
        self.track_capacity()

    def spawn(self, slot: Slot) -> None:
        leader = self.program.spawning_leader()
        if leader is None:
            return
        config = self.program.config
        self._next_wid += 1
        extra = random.randint(0, config.max_jobs_jitter) if config.max_jobs else 0
        worker = WorkerProc(wid=self._next_wid, slot=slot.index, leader=leader,
                            max_jobs=config.max_jobs + extra, spawned=self.host.loop.clock.time())
        master_end, worker_end = ipc.socketpair()
        stats_fd = stats_segment.create()
        try:
            leader.outbox.send({"op": Op.SPAWN, "wid": worker.wid, "slot": slot.index,
                                   "max_jobs": worker.max_jobs}, [worker_end.fileno(), stats_fd])
        except OSError as exc:
            master_end.close()
            os.close(stats_fd)
            log.error("cannot reach the leader", program=self.name, error=str(exc))
            return
        finally:
            worker_end.close()
        master_end.setblocking(False)  # the master never waits on a worker either
        worker.channel = master_end
        # The master keeps the descriptor while the worker lives: a re-exec hands it over.
        worker.stats = stats_segment.Stats(stats_fd, keep_fd=True)
        self.totals.worker_started(worker, worker.stats)
        self._listen(worker)
        self._pending_spawns[worker.wid] = worker
        slot.worker = worker

    def _listen(self, worker: WorkerProc) -> None:
        assert worker.channel is not None
        self.host.loop.add_reader(worker.channel, lambda: self._on_message(worker))

    def drain(self, worker: WorkerProc | None, reason: str) -> None:
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
            self.host.processes.signal(worker.pid, signal.SIGTERM)
        worker.kill_timer = self.host.loop.call_later(
            self.program.config.stop_timeout, lambda: self._kill(worker, "stop_timeout"))

    def kill_all(self) -> None:
        for worker in self.live():
            if worker.pid is not None:
                self.host.processes.signal(worker.pid, signal.SIGKILL)

    # -- events -------------------------------------------------------------------------

    def on_spawned(self, wid: int, pid: int) -> None:
        worker = self._pending_spawns.pop(wid, None)
        if worker is None:
            return
        worker.pid = pid
        self.host.track_pid(pid, self.program)
        log.info("worker started", program=self.name, slot=worker.slot, pid=pid)
        if worker.state is W.STOPPING:  # a stop arrived before the pid did
            self.host.processes.signal(pid, signal.SIGTERM)

    def on_spawn_failed(self, wid: int, error: str) -> None:
        worker = self._pending_spawns.pop(wid, None)
        if worker is not None:
            self._gone(worker, None, f"fork failed: {error}")

    def leader_gone(self, leader: LeaderProc) -> None:
        """Workers asked of a leader that is gone before it said it forked them never will
        be: they are gone too (else they would wait, STARTING or STOPPING, for ever)."""
        for wid, worker in list(self._pending_spawns.items()):
            if worker.leader is leader:
                del self._pending_spawns[wid]
                self._gone(worker, None, "its leader exited before forking it")

    def on_exit(self, pid: int, status: int) -> None:
        worker = next((w for w in self.all_known() if w.pid == pid), None)
        if worker is not None:
            self._gone(worker, status, procutil.describe_status(status))

    def _on_message(self, worker: WorkerProc) -> None:
        assert worker.channel is not None
        try:
            msg = ipc.recv_message(worker.channel)
        except BlockingIOError:
            return
        if msg is None:
            self._close_channel(worker)
            return
        event, op = msg.get("ev"), msg.get("op")
        if op == Op.CRASHES:
            self.questions.ask(worker, msg.get("rid"), str(msg.get("id")))
            return
        if event == Ev.UNSETTLED:
            self._unsettled(worker, str(msg.get("id")), str(msg.get("how")))
            return
        if event == Ev.READY and worker.state is W.STARTING:
            worker.ready_at = self.host.loop.clock.monotonic()
            worker.node = _text_or_none(msg.get("node"))
            worker.version = _text_or_none(msg.get("version"))
            transition(worker, W.RUNNING, log.info, program=self.name, slot=worker.slot,
                       pid=worker.pid)
            self._on_running(worker)
        elif event == Ev.BROKER_LOST:
            worker.broker_error = str(msg.get("error"))
            worker.node = None
        elif event == Ev.BROKER_BACK:
            worker.broker_error = None
            worker.node = _text_or_none(msg.get("node"))
        elif event == Ev.EXITING:
            worker.exit_reason = str(msg.get("reason"))
            worker.exit_error = msg.get("error")
            worker.exit_settled = bool(msg.get("settled"))
        self.track_capacity()
        self.host.changed()

    def _unsettled(self, worker: WorkerProc, message_id: str, how: str) -> None:
        """The worker ran a job whose outcome it could not settle (its broker connection
        died under the job): the broker redelivers the message, and that run counts as
        a failed attempt as a death would."""
        log.warning("a job's outcome was lost with its broker connection; counted as a "
                    "failed attempt", program=self.name, slot=worker.slot, pid=worker.pid,
                    message_id=message_id, how=how)
        self.crashes.record(message_id, how)

    def _on_running(self, worker: WorkerProc) -> None:
        slot = self.slots.get(worker.slot)
        if slot is None or slot.worker is not worker:
            return
        slot.start_failures = 0
        if slot.predecessor is not None:
            predecessor, slot.predecessor = slot.predecessor, None
            self.drain(predecessor, "reload")

    # -- exits --------------------------------------------------------------------------

    def _gone(self, worker: WorkerProc, status: int | None, how: str) -> None:
        if not worker.alive:
            return
        if worker.kill_timer is not None:
            worker.kill_timer.cancel()
        self._read_last_words(worker)
        self._close_channel(worker)
        snapshot = worker.stats.read() if worker.stats is not None else None
        meaning = classify_exit(ExitFacts(
            status=status, how=how, stop_reason=worker.stop_reason, killed=worker.killed,
            exit_reason=worker.exit_reason, exit_error=worker.exit_error,
            exit_settled=worker.exit_settled, was_ready=worker.ready_at is not None,
            job_in_hand=snapshot is not None and snapshot.job_id is not None))
        self._account(worker, snapshot, meaning)
        if worker.stats is not None:
            # Its last reading is all status shows of it from now on; the segment (a
            # descriptor and a mapping) goes now, not when the record is collected.
            worker.stats.close()
            worker.final, worker.stats = snapshot, None
        self.questions.worker_gone(worker)  # its lost job is in the ledger now
        worker.last_exit = meaning.summary
        transition(worker, W.EXITED, log.info, program=self.name, slot=worker.slot,
                   pid=worker.pid, exit=worker.last_exit)
        if worker in self.draining:
            self.draining.remove(worker)
        slot = self.slots.get(worker.slot)
        if slot is not None and slot.predecessor is worker:
            slot.predecessor = None
        if slot is not None and slot.worker is worker:
            slot.last_exit = worker.last_exit
            self._after_slot_exit(slot, worker, meaning)
        self._keep_one_coming()
        self.track_capacity()
        self.program.workers_changed()

    def _account(self, worker: WorkerProc, snapshot: Snapshot | None, meaning: Exit) -> None:
        """Fold its counters into the program's totals; keep the dead worker's per-second
        job counts for a minute, and remember the message it died holding when that counts
        as a failed attempt."""
        in_hand = snapshot is not None and snapshot.job_id is not None
        self.totals.worker_gone(worker, exit_reason(meaning, worker.stop_reason,
                                                    worker.exit_reason),
                                timed_out_in_hand=meaning.kind is ExitKind.TIMED_OUT and in_hand)
        if worker.stats is None or snapshot is None:
            return
        self.recent.append((self.host.loop.clock.time(), worker.stats.ring()))
        if meaning.crash_cause is not None and snapshot.job_id is not None:
            self.crashes.record(snapshot.job_id, meaning.crash_cause)

    def _after_slot_exit(self, slot: Slot, worker: WorkerProc, meaning: Exit) -> None:
        if not self.program.running or slot.index >= self.desired:
            return  # the leader's "ready" (or a later start) fills the slot
        if meaning.replace_now:
            slot.restarts += 1
            self.spawn(slot)
            return
        if worker.ran_for(self.host.loop.clock.monotonic()) >= STABLE_AFTER:
            slot.failures = 0
        slot.failures += 1
        slot.restarts += 1
        if meaning.start_failure:
            slot.start_failures += 1
        if slot.start_failures >= self.program.config.start_retries:
            transition(worker, W.FATAL, log.error, program=self.name, slot=slot.index,
                       error=worker.exit_error or worker.last_exit,
                       hint="fix it, then: qsupervisorctl start " + self.name)
            return
        delay = backoff(slot.failures)
        transition(worker, W.BACKOFF, log.warning, program=self.name, slot=slot.index,
                   pid=worker.pid, retry_in=delay)
        self._retry_at(slot, worker, self.host.loop.clock.monotonic() + delay)

    def _keep_one_coming(self) -> None:
        """The floor under crash backoff. Each slot's delay grows on its own, so a storm
        of crashes across every slot (an OOM killer on a tight host) would leave them all
        backing off for up to BACKOFF_MAX with no consumer at all, while messages pile up.
        While no worker is STARTING or RUNNING, the slot whose restart is due soonest
        restarts within BACKOFF_INITIAL instead. Its failure count still grows (FATAL
        still comes after start_retries failed starts), and the other slots keep their
        delays: one consumer at most sooner, not a crash loop of all of them."""
        if not self.program.running or self._starting_or_running():
            return
        waiting = [slot for index, slot in self.slots.items()
                   if index < self.desired and slot.backoff_timer is not None
                   and slot.worker is not None and slot.worker.state is W.BACKOFF]
        if not waiting:
            return  # nothing backing off: every slot FATAL, or being filled already
        soonest = min(waiting, key=_due)
        if _due(soonest) - self.host.loop.clock.monotonic() <= BACKOFF_INITIAL:
            return
        worker = soonest.worker
        assert worker is not None
        self._cancel_backoff(soonest)
        log.warning("no worker left consuming; restarting one slot sooner", program=self.name,
                    slot=soonest.index, retry_in=BACKOFF_INITIAL)
        self._retry_at(soonest, worker, self.host.loop.clock.monotonic() + BACKOFF_INITIAL)

    def _starting_or_running(self) -> bool:
        """A worker consumes or is about to: a draining one (STOPPING) has cancelled."""
        return any(w.state in (W.STARTING, W.RUNNING) for w in self.all_known())

    def _retry_at(self, slot: Slot, worker: WorkerProc, when: float) -> None:
        slot.backoff_timer = self.host.loop.call_at(when, lambda: self._retry(slot, worker))

    def _retry(self, slot: Slot, worker: WorkerProc) -> None:
        slot.backoff_timer = None
        if slot.worker is worker and worker.state is W.BACKOFF:
            # Backoff over. Not running now (its leader is being replaced), the slot is
            # refilled with the others when the leader is ready: fill() takes EXITED
            # slots, and one left in BACKOFF was never refilled.
            transition(worker, W.EXITED)
            if self.program.running:
                self.spawn(slot)
        self.host.changed()

    def _kill(self, worker: WorkerProc, why: str) -> None:
        if worker.alive and worker.pid is not None:
            log.warning(f"{why} passed; killing the worker", program=self.name,
                        slot=worker.slot, pid=worker.pid)
            worker.killed = why
            self.host.processes.signal(worker.pid, signal.SIGKILL)

    # -- handing over through a re-exec (handover.py) ---------------------------------

    def export_state(self, leaders: list[LeaderProc]) -> dict[str, Any]:
        workers = self.all_known()
        return {
            "desired": self.desired, "next_wid": self._next_wid,
            "workers": [handover.worker_state(w, leaders) for w in workers],
            "slots": [handover.slot_state(slot, workers)
                      for _, slot in sorted(self.slots.items())],
            "draining": [workers.index(w) for w in self.draining],
            "pending": [workers.index(w) for w in self._pending_spawns.values()],
            "recent": self._recent_state(),
            "crashes": self.crashes.export_state(),
            "short_since": self._short_since,
        }

    def _recent_state(self) -> list[list[Any]]:
        """The exited workers' last minute, as far as it counts: entries older than a
        minute, and buckets without a job, are left out (1,000 recycled workers' rings in
        full cost the new image tens of milliseconds to parse)."""
        self.recent_exits()  # prunes what is past the minute
        carried = []
        for at, ring in self.recent:
            buckets = [list(ring[i:i + 4]) for i in range(0, len(ring), 4) if ring[i + 1]]
            if buckets:
                carried.append([at, buckets])
        return carried

    def load_state(self, data: dict[str, Any], leaders: list[LeaderProc]) -> None:
        """The pool as it was: its workers' channels watched, their pids tracked, their
        counters live again, and every timer re-armed at its deadline."""
        workers = [handover.worker_from(w, leaders) for w in data["workers"]]
        self.desired = int(data["desired"])
        self._next_wid = int(data["next_wid"])
        self.slots = {}
        for slot_data in data["slots"]:
            slot = handover.slot_from(slot_data, workers)
            self.slots[slot.index] = slot
            if slot_data["backoff_at"] is not None and slot.worker is not None:
                self._retry_at(slot, slot.worker, float(slot_data["backoff_at"]))
        self.draining = [workers[i] for i in data["draining"]]
        self._pending_spawns = {workers[i].wid: workers[i] for i in data["pending"]}
        self.recent = collections.deque((float(at), stats_segment.ring_of(buckets))
                                        for at, buckets in data["recent"])
        self.crashes.load_state(data["crashes"])
        self._short_since = data["short_since"]
        loop = self.host.loop
        for worker, worker_data in zip(workers, data["workers"]):
            if worker.channel is not None:
                self._listen(worker)
            if worker.alive and worker.stats is not None:
                self.totals.worker_started(worker, worker.stats)
            if worker.alive and worker.pid is not None:
                self.host.track_pid(worker.pid, self.program)
            if worker_data["kill_at"] is not None:
                worker.kill_timer = loop.call_at(
                    float(worker_data["kill_at"]),
                    lambda worker=worker: self._kill(worker, "stop_timeout"))  # type: ignore[misc]
        self._watchdog.arm()

    def settled(self) -> str | None:
        """Why the pool cannot be handed over right now (None: it can)."""
        return self.questions.pending()

    # -- helpers ------------------------------------------------------------------------

    def _cancel_backoff(self, slot: Slot) -> None:
        if slot.backoff_timer is not None:
            slot.backoff_timer.cancel()
            slot.backoff_timer = None

    def _read_last_words(self, worker: WorkerProc) -> None:
        """Handle what the worker sent before it exited. The leader's report of the exit
        may be read first; without the worker's "exiting" (why it left), a recycle would
        be taken for a crash and its slot backed off instead of refilled at once."""
        while worker.channel is not None and ipc.readable(worker.channel):
            self._on_message(worker)  # at end of file it closes the channel

    def _close_channel(self, worker: WorkerProc) -> None:
        if worker.channel is not None:
            self.host.loop.remove_reader(worker.channel)
            worker.channel.close()
            worker.channel = None


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
