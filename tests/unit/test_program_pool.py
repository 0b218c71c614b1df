"""The master's program and pool logic, run on fake leaders and a manual clock
(tests/unit/fakes.py): start, rolling reload, backoff to FATAL and revival, leader death,
stop while starting, scale during reload."""

from __future__ import annotations

import random
import signal

from qsupervisor.exit_codes import EXIT_HANDLER_IMPORT
from qsupervisor.master import questions
from qsupervisor.master.pool import BACKOFF_INITIAL, BACKOFF_MAX, STABLE_AFTER, backoff
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.states import ProgramState, WorkerState
from tests.unit.config_files import program
from tests.unit.fakes import World

P, W = ProgramState, WorkerState


def running(world: World, **settings: object) -> ProgramRuntime:
    settings.setdefault("workers", 2)
    runtime = ProgramRuntime(program("orders", **settings), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    return runtime


def states(runtime: ProgramRuntime) -> list:
    return [w.state for w in runtime.workers()]


def test_start_runs_every_slot_and_settles() -> None:
    world = World()
    runtime = running(world, workers=3)
    assert runtime.state is P.RUNNING
    assert states(runtime) == [W.RUNNING] * 3
    assert runtime.steady() and runtime.serving() == 3
    assert len(world.leaders) == 1 and len(world.workers()) == 3


def test_start_waits_for_the_leader_and_its_workers() -> None:
    world = World(auto_ready=False)
    runtime = ProgramRuntime(program("orders", workers=2), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    assert runtime.state is P.STARTING and not runtime.steady()
    world.leader().ready()
    world.run()
    assert runtime.state is P.RUNNING and states(runtime) == [W.STARTING] * 2
    for worker in world.workers():
        worker.ready()
    world.run()
    assert states(runtime) == [W.RUNNING] * 2 and runtime.steady()


def running_by_hand(world: World, workers: int) -> ProgramRuntime:
    """Started with a world that answers nothing by itself; its leader and workers are
    made ready here, so that the test decides what the next ones do."""
    runtime = ProgramRuntime(program("orders", workers=workers), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    world.leader().ready()
    world.run()
    for worker in world.workers():
        worker.ready()
    world.run()
    return runtime


def test_rolling_reload_never_has_fewer_consumers() -> None:
    world = World(auto_ready=False)
    runtime = running_by_hand(world, 2)
    old = list(world.workers())
    runtime.reload(preload=False)
    world.run()
    assert runtime.serving() == 2 and not runtime.steady()
    assert len(world.workers()) == 4  # the successors start beside the old ones
    assert not any(w.exited for w in old)
    new = [w for w in world.workers() if w not in old]
    new[0].ready()
    world.run()
    assert old[0].exited and not old[1].exited  # each old one goes when its successor runs
    assert runtime.serving() == 2
    new[1].ready()
    world.run()
    assert old[1].exited and runtime.steady()
    assert [w.last_exit for w in runtime.workers()] == [None, None]


def test_reload_preload_replaces_the_leader_first() -> None:
    world = World()
    runtime = running(world)
    first = world.leader()
    runtime.reload(preload=True)
    world.run()
    assert first.exited and world.leader() is not first
    assert runtime.leader is not None and runtime.leader.pid == world.leader().pid
    assert runtime.steady() and len(world.workers()) == 2
    assert all(w.leader is world.leader() for w in world.workers())


def test_failed_preload_on_reload_leaves_the_running_program_alone() -> None:
    world = World()
    runtime = running(world)
    world.auto_ready = False
    runtime.reload(preload=True)
    world.run()
    world.live_leaders()[-1].send(ev="preload_failed", error="ImportError: no app")
    world.run()
    assert runtime.state is P.RUNNING and runtime.serving() == 2
    assert runtime.error == "preload failed: ImportError: no app"
    assert runtime.pending_leader is None and runtime.steady()


def test_crashes_back_off_then_the_slot_goes_fatal_and_start_revives_it() -> None:
    world = World()
    runtime = running(world, workers=2, start_retries=3)  # slot 1 serves throughout
    world.auto_ready = False  # from now on new workers die before they are ready
    delays = []
    slot = runtime.slot(0)
    assert slot is not None
    while True:
        world.worker(0).exit(1)
        world.run()
        assert slot.worker is not None
        if slot.worker.state is W.FATAL:
            break
        assert slot.worker.state is W.BACKOFF
        delays.append(backoff(slot.failures))
        world.advance(delays[-1] - 0.01)
        assert slot.worker.state is W.BACKOFF  # not a moment early
        world.advance(0.01)
    assert delays == [1.0, 2.0, 4.0]  # the first crash had run: not a start failure
    assert slot.worker.last_exit == "crashed: exit code 1"
    assert runtime.steady()  # a FATAL slot is decided
    assert runtime.problems() == ["worker 0: crashed: exit code 1"]
    world.auto_ready = True
    runtime.start()
    world.run()
    assert states(runtime) == [W.RUNNING] * 2 and runtime.problems() == []


def test_a_worker_that_ran_a_while_is_not_counted_towards_fatal() -> None:
    world = World()
    runtime = running(world, workers=1, start_retries=2)
    for _ in range(5):
        world.advance(STABLE_AFTER + 1)
        world.worker(0).exit(1)
        world.run()
        slot = runtime.slot(0)
        assert slot is not None and slot.worker is not None
        assert slot.worker.state is W.BACKOFF and slot.failures == 1
        world.advance(1.0)
    assert states(runtime) == [W.RUNNING]


def test_handler_import_failure_is_a_start_failure() -> None:
    world = World()
    runtime = running(world, workers=1, start_retries=1)
    world.worker(0).exit(EXIT_HANDLER_IMPORT, reason="handler import failed",
                         error="app.jobs:handle: ImportError: boom")
    world.run()
    assert states(runtime) == [W.FATAL]
    assert runtime.problems() == ["worker 0: app.jobs:handle: ImportError: boom"]


def test_recycled_worker_is_replaced_at_once() -> None:
    world = World()
    runtime = running(world, workers=1)
    world.worker(0).exit(0, reason="max_jobs")
    world.run()
    assert states(runtime) == [W.RUNNING]
    slot = runtime.slot(0)
    assert slot is not None and slot.restarts == 1 and slot.failures == 0
    assert slot.last_exit == "recycled: max_jobs"


def test_leader_death_stops_its_workers_and_a_new_leader_starts_after_backoff() -> None:
    world = World()
    runtime = running(world)
    first = world.leader()
    first.exit(signal.SIGKILL)  # its workers die with it (PDEATHSIG); reports follow
    world.run()
    assert runtime.state is P.STARTING and runtime.leader is None
    assert all(w.state is W.STOPPING for w in runtime.live_workers())
    world.advance(backoff(1))
    assert runtime.leader is not None and runtime.leader.pid != first.pid


def test_leader_dying_start_retries_times_makes_the_program_fatal() -> None:
    world = World(auto_ready=False)
    runtime = ProgramRuntime(program("orders", workers=1, start_retries=2), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    world.leader().exit(1 << 8)
    world.run()
    world.advance(backoff(1))
    world.leader().exit(1 << 8)
    world.run()
    assert runtime.state is P.FATAL
    assert runtime.error is not None and "leader died 2 times in a row" in runtime.error


def test_stop_while_starting_stops_and_forgets_the_start() -> None:
    world = World(auto_ready=False)
    runtime = ProgramRuntime(program("orders", workers=2), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    runtime.stop()
    world.run()
    assert runtime.state is P.STOPPED and runtime.leader is None
    assert world.live_leaders() == []


def test_start_during_a_stop_waits_for_stopped_then_starts() -> None:
    world = World()
    runtime = running(world)
    world.obedient = False
    runtime.stop()
    world.run()
    assert runtime.state is P.STOPPING
    runtime.start()
    world.run()
    assert runtime.state is P.STOPPING and runtime.start_when_stopped
    world.obedient = True
    for worker in world.workers():
        worker.exit(0, reason="stopped")  # the retired leader leaves after its last one
    world.run()
    assert runtime.state is P.RUNNING and runtime.steady()
    assert len(world.leaders) == 2 and world.leaders[0].exited


def test_stop_timeout_kills_a_worker_that_does_not_leave() -> None:
    world = World()
    runtime = running(world, workers=1, stop_timeout=7.0)
    world.obedient = False
    runtime.stop()
    world.run()
    pid = world.worker(0).pid
    assert (pid, signal.SIGTERM) in world.processes.signals
    world.advance(6.9)
    assert (pid, signal.SIGKILL) not in world.processes.signals
    world.advance(0.2)
    assert (pid, signal.SIGKILL) in world.processes.signals
    world.worker(0).exit(sig=signal.SIGKILL)
    world.run()
    assert runtime.slot(0) is not None
    assert runtime.slot(0).last_exit == "killed: stop_timeout (stop)"  # type: ignore[union-attr]


def test_scale_down_drains_the_highest_slots_and_up_adds_new_ones() -> None:
    world = World()
    runtime = running(world, workers=3)
    runtime.scale(1)
    world.run()
    assert [w.slot for w in runtime.live_workers()] == [0]
    assert runtime.steady()
    runtime.scale(2)
    world.run()
    assert sorted(w.slot for w in runtime.live_workers()) == [0, 1] and runtime.steady()


def test_scale_during_a_reload() -> None:
    world = World(auto_ready=False)
    runtime = running_by_hand(world, 2)
    runtime.reload(preload=False)
    world.run()
    runtime.scale(1)  # slot 1's old worker and its half-started successor both go
    world.run()
    for worker in world.workers():
        if worker.slot == 0 and not worker.exited:
            worker.ready()
    world.run()
    assert [w.slot for w in runtime.live_workers()] == [0]
    assert runtime.serving() == 1 and runtime.steady()


def test_spawn_failure_backs_the_slot_off() -> None:
    world = World()
    runtime = running(world, workers=1)
    world.leader().fail_spawns = "Resource temporarily unavailable"
    world.worker(0).exit(0, reason="max_jobs")
    world.run()
    slot = runtime.slot(0)
    assert slot is not None and slot.worker is not None
    assert slot.worker.state is W.BACKOFF
    assert slot.last_exit == "crashed: fork failed: Resource temporarily unavailable"


def test_a_worker_killed_holding_a_job_is_recorded_as_a_failed_attempt() -> None:
    world = World()
    runtime = running(world, workers=1)
    world.worker(0).start_job("msg-1")
    world.worker(0).exit(sig=signal.SIGKILL)
    world.run()
    assert runtime.pool.crashes.take("msg-1") == (1, "signal SIGKILL")


def test_job_timeout_watchdog_kills_a_stuck_worker() -> None:
    world = World()
    runtime = running(world, workers=1, timeout=10.0)
    world.obedient = False
    world.worker(0).start_job("msg-stuck")
    pid = world.worker(0).pid
    world.advance(10.0)
    assert (pid, signal.SIGKILL) not in world.processes.signals  # the worker's own grace
    for _ in range(10):
        world.advance(5.0)
    assert (pid, signal.SIGKILL) in world.processes.signals
    world.worker(0).exit(sig=signal.SIGKILL)
    world.run()
    slot = runtime.slot(0)
    assert slot is not None and slot.last_exit is not None
    assert slot.last_exit.startswith("killed: timeout")
    assert runtime.pool.crashes.take("msg-stuck") == (1, "killed: timeout")


def test_queue_stats_requests_reach_the_leader_and_answers_come_back() -> None:
    world = World()
    runtime = running(world)
    world.queue_stats = {"ready": 5, "consumers": 2, "dead_letter_ready": 0}
    answers: list = []
    assert runtime.request_queue_stats(answers.append)
    world.run()
    assert answers and answers[0]["ready"] == 5


def test_kill_all_kills_workers_and_leaders() -> None:
    world = World()
    runtime = running(world)
    runtime.stop("shutdown")
    runtime.kill_all()
    world.run()
    assert runtime.state is P.STOPPED and world.live_leaders() == []


def test_a_slot_whose_backoff_ends_while_its_leader_is_replaced_is_refilled() -> None:
    """The backoff timer found the program STARTING (its leader died meanwhile), did
    nothing, and left the slot in BACKOFF: the new leader's fill() skipped it for ever."""
    world = World()
    runtime = running(world, workers=1)
    world.worker(0).exit(1)  # a crash: the slot backs off for 1 s
    world.run()
    world.leader().exit(signal.SIGKILL)  # then the leader dies: respawned after 1 s
    world.run()
    world.advance(backoff(1))  # the slot's timer fires first, with no leader to spawn from
    world.advance(0.1)
    assert runtime.state is P.RUNNING and states(runtime) == [W.RUNNING]


# -- the floor under crash backoff ---------------------------------------------------------


def consuming(runtime: ProgramRuntime) -> list:
    return [w for w in runtime.workers() if w.state in (W.STARTING, W.RUNNING)]


def next_restart_in(world: World, runtime: ProgramRuntime) -> float:
    due = [s.backoff_timer.when for s in runtime.pool.slots.values()
           if s.backoff_timer is not None]
    return min(due) - world.clock.monotonic() if due else float("inf")


def test_a_crash_storm_across_every_slot_never_leaves_the_program_without_a_consumer() -> None:
    """An OOM killer SIGKILLing a random worker every 0.3 s: each slot's delay grows to
    BACKOFF_MAX, and before the floor all four sat in a 60 s backoff at once (16,249
    messages waiting, no consumer for a minute)."""
    world = World()
    runtime = running(world, workers=4)
    rng = random.Random(11)
    empty_for = longest_empty = 0.0
    for _ in range(2000):  # ten minutes
        live = world.workers()
        if live:
            rng.choice(live).exit(sig=signal.SIGKILL)
            world.run()
        if not consuming(runtime):
            assert next_restart_in(world, runtime) <= BACKOFF_INITIAL
        world.advance(0.3)
        empty_for = 0.0 if consuming(runtime) else empty_for + 0.3
        longest_empty = max(longest_empty, empty_for)
    slots = runtime.pool.slots.values()
    assert max(backoff(s.failures) for s in slots) == BACKOFF_MAX  # a real storm
    assert longest_empty <= BACKOFF_INITIAL + 0.3
    assert all(w.state is not W.FATAL for w in runtime.workers())  # crashes after RUNNING


def test_a_slot_keeps_its_growing_backoff_while_another_slot_serves() -> None:
    world = World()
    runtime = running(world, workers=2)
    slot = runtime.slot(0)
    assert slot is not None
    delays = []
    for _ in range(7):
        world.worker(0).exit(1)
        world.run()
        assert slot.worker is not None and slot.worker.state is W.BACKOFF
        delays.append(next_restart_in(world, runtime))
        world.advance(delays[-1])
        assert slot.worker.state is W.RUNNING
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]


def test_the_last_consumer_failing_restarts_after_the_initial_delay_and_counts() -> None:
    world = World()
    runtime = running(world, workers=2)
    first, second = runtime.slot(0), runtime.slot(1)
    assert first is not None and second is not None
    first.failures = second.failures = 5  # both have failed often: 32 s, then 60 s
    world.worker(0).exit(1)
    world.run()
    assert next_restart_in(world, runtime) == 32.0  # slot 1 still serves
    world.worker(1).exit(1)
    world.run()
    # Slot 0 was due soonest (in 32 s): it comes back after 1 s; slot 1 keeps its 32 s.
    assert next_restart_in(world, runtime) == BACKOFF_INITIAL
    assert first.backoff_timer is not None and second.backoff_timer is not None
    assert second.backoff_timer.when - world.clock.monotonic() == 32.0
    assert (first.failures, second.failures) == (6, 6)  # the counts still grow
    world.advance(BACKOFF_INITIAL)
    assert [w.state for w in runtime.workers()] == [W.RUNNING, W.BACKOFF]
    world.worker(0).exit(1)  # the one consumer fails again: again the floor
    world.run()
    assert next_restart_in(world, runtime) == BACKOFF_INITIAL and first.failures == 7


def test_start_failures_still_go_fatal_and_the_floor_moves_to_another_slot() -> None:
    world = World()
    runtime = running(world, workers=2, start_retries=3)
    world.auto_ready = False  # new workers now die before they are ready
    world.worker(1).exit(1)
    world.run()
    world.worker(0).exit(1)
    world.run()
    slots = [runtime.slot(0), runtime.slot(1)]
    for _ in range(20):
        if any(s is not None and s.worker is not None and s.worker.state is W.FATAL
               for s in slots):
            break
        assert not consuming(runtime) and next_restart_in(world, runtime) <= BACKOFF_INITIAL
        world.advance(next_restart_in(world, runtime))
        for worker in world.workers():
            worker.exit(1)
        world.run()
    fatal = [s for s in slots if s is not None and s.worker is not None
             and s.worker.state is W.FATAL]
    assert len(fatal) == 1 and fatal[0].start_failures == 3
    # The other slot, still backing off, is now the one that comes back soon.
    assert next_restart_in(world, runtime) <= BACKOFF_INITIAL


def test_a_reload_predecessor_still_serving_keeps_the_new_workers_backoff() -> None:
    world = World(auto_ready=False)
    runtime = running_by_hand(world, 1)
    old = world.worker(0)
    runtime.reload(preload=False)
    world.run()
    slot = runtime.slot(0)
    assert slot is not None
    slot.failures = 5
    new = next(w for w in world.workers() if w is not old)
    new.exit(1)
    world.run()
    assert next_restart_in(world, runtime) == 32.0  # the old worker still consumes
    old.exit(sig=signal.SIGKILL)  # then it dies too: nobody consumes
    world.run()
    assert next_restart_in(world, runtime) == BACKOFF_INITIAL


def test_a_scale_down_gives_up_a_backing_off_slot_before_the_consuming_worker() -> None:
    # The scale drains the slot doing least: the crashed one in its 60 s backoff, not the
    # worker consuming (before, the highest slot went, and the floor then had to bring
    # the backing-off one back sooner to keep a consumer).
    world = World()
    runtime = running(world, workers=2)
    slot = runtime.slot(0)
    assert slot is not None
    slot.failures = 6
    world.worker(0).exit(1)
    world.run()
    assert next_restart_in(world, runtime) == 60.0
    consuming = world.worker(1)
    runtime.scale(1)
    world.run()
    assert next_restart_in(world, runtime) == float("inf")
    assert [w.pid for w in runtime.live_workers()] == [consuming.pid]
    assert [w.state for w in runtime.live_workers()] == [W.RUNNING]


def test_a_floor_restart_due_while_the_leader_is_replaced_runs_on_the_new_leader() -> None:
    world = World()
    runtime = running(world, workers=2)
    first, second = runtime.slot(0), runtime.slot(1)
    assert first is not None and second is not None
    first.failures = second.failures = 6
    world.worker(0).exit(1)
    world.run()
    world.worker(1).exit(1)
    world.run()
    assert next_restart_in(world, runtime) == BACKOFF_INITIAL  # slot 0, due soonest
    world.leader().exit(signal.SIGKILL)
    world.run()
    assert runtime.state is P.STARTING
    world.advance(max(BACKOFF_INITIAL, backoff(1)))  # the floor's timer, the new leader
    world.run()
    assert runtime.state is P.RUNNING
    assert [w.state for w in runtime.workers()] == [W.RUNNING, W.BACKOFF]
    assert second.backoff_timer is not None  # the other slot keeps its delay
    assert second.backoff_timer.when - world.clock.monotonic() > 50


def test_a_stopping_program_gets_no_floor() -> None:
    world = World()
    runtime = running(world, workers=2)
    for index in (0, 1):
        slot = runtime.slot(index)
        assert slot is not None
        slot.failures = 6
    world.worker(0).exit(1)
    world.run()
    world.obedient = False
    runtime.stop()
    world.run()
    world.worker(1).exit(1)  # the last consumer goes while the program stops
    world.run()
    assert runtime.state is P.STOPPING  # its leader has not left yet
    assert next_restart_in(world, runtime) == float("inf")


# -- a redelivered message another worker still holds ------------------------------------

LOST = "killed: broker connection lost during the job"


def test_a_question_about_a_message_another_worker_holds_kills_it_and_waits_for_its_exit(
) -> None:
    world = World()
    runtime = running(world, workers=2)
    stale, asker = world.worker(0), world.worker(1)
    stale.start_job("msg-7")  # its connection died under the job; the broker redelivered
    world.obedient = False
    asker.send(op="crashes", rid=4, id="msg-7")
    world.run()
    assert (stale.pid, signal.SIGKILL) in world.processes.signals
    assert asker.received() == []  # not before the stale worker's exit is handled
    world.advance(questions.ANSWER_BOUND - 0.1)
    assert asker.received() == []
    stale.exit(sig=signal.SIGKILL)
    world.run()
    assert asker.received() == [{"rid": 4, "count": 1, "how": LOST}]  # the lost run counts
    slot = runtime.slot(0)
    assert slot is not None
    assert slot.last_exit == ("killed: its message was redelivered "
                              "(broker connection lost during the job)")
    assert states(runtime) == [W.RUNNING, W.RUNNING]  # replaced at once, no backoff
    assert slot.failures == 0 and slot.restarts == 1
    assert len(runtime.pool.crashes) == 0  # told, and so forgotten


def test_a_question_nobody_else_holds_is_answered_at_once_with_the_ledger() -> None:
    world = World()
    runtime = running(world, workers=2)
    runtime.pool.crashes.record("msg-8", "signal SIGSEGV")
    world.worker(0).start_job("msg-other")
    world.worker(1).send(op="crashes", rid=1, id="msg-8")
    world.run()
    assert world.worker(1).received() == [{"rid": 1, "count": 1, "how": "signal SIGSEGV"}]
    world.worker(1).send(op="crashes", rid=2, id="msg-9")
    world.run()
    assert world.worker(1).received() == [{"rid": 2, "count": 0, "how": ""}]
    assert not any(sig == signal.SIGKILL for _, sig in world.processes.signals)


def test_the_asker_holding_the_message_itself_is_not_killed() -> None:
    world = World()
    running(world, workers=1)
    world.worker(0).start_job("msg-1")  # a stale stats read of its own: not another worker
    world.worker(0).send(op="crashes", rid=1, id="msg-1")
    world.run()
    assert world.worker(0).received() == [{"rid": 1, "count": 0, "how": ""}]
    assert world.processes.signals == []


def test_a_draining_worker_still_holding_the_message_is_killed_too() -> None:
    """A reload's predecessor stops consuming but finishes its job: if the broker has
    redelivered that job's message, its ack cannot land either."""
    world = World()
    runtime = running(world, workers=1)
    old = world.worker(0)
    old.start_job("msg-7")
    world.obedient = False  # the old worker keeps running its job after SIGTERM
    runtime.reload(preload=False)
    world.run()
    new = next(w for w in world.workers() if w is not old)
    new.ready()
    world.run()
    assert [w.state for w in runtime.workers()] == [W.RUNNING, W.STOPPING]
    new.send(op="crashes", rid=1, id="msg-7")
    world.run()
    assert (old.pid, signal.SIGKILL) in world.processes.signals
    old.exit(sig=signal.SIGKILL)
    world.run()
    assert new.received() == [{"rid": 1, "count": 1, "how": LOST}]
    assert states(runtime) == [W.RUNNING]


def test_a_stale_worker_whose_exit_is_never_reported_delays_the_answer_by_the_bound() -> None:
    world = World()
    running(world, workers=2)
    stale, asker = world.worker(0), world.worker(1)
    stale.start_job("msg-7")
    world.obedient = False  # the kill is never seen (a wedged leader)
    asker.send(op="crashes", rid=1, id="msg-7")
    world.run()
    world.advance(questions.ANSWER_BOUND - 0.01)
    assert asker.received() == []
    world.advance(0.01)
    assert asker.received() == [{"rid": 1, "count": 0, "how": ""}]
    stale.exit(sig=signal.SIGKILL)  # reported after all: recorded for the next delivery
    world.run()
    assert asker.received() == []
    assert len(world.processes.signals) == 1  # killed once


def test_a_body_derived_id_another_worker_holds_is_answered_at_once_and_kills_nobody() -> None:
    """Two messages with the same body and no message_id share their derived id: the
    other worker may be running its own copy, legitimately."""
    world = World()
    running(world, workers=2)
    world.worker(0).start_job("sha1:0123456789abcdef")
    world.worker(1).send(op="crashes", rid=1, id="sha1:0123456789abcdef")
    world.run()
    assert world.worker(1).received() == [{"rid": 1, "count": 0, "how": ""}]
    assert world.processes.signals == []


def test_a_reported_unsettled_job_counts_as_a_failed_attempt() -> None:
    world = World()
    runtime = running(world, workers=1)
    how = "broker connection lost before the job's outcome was settled"
    world.worker(0).send(ev="unsettled", id="msg-3", how=how)
    world.worker(0).send(op="crashes", rid=1, id="msg-3")  # its redelivered copy, after
    world.run()
    assert world.worker(0).received() == [{"rid": 1, "count": 1, "how": how}]
    assert states(runtime) == [W.RUNNING]  # the worker lives on
