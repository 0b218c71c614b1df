"""A program's records through a re-exec's hand-over (master/handover.py): exported to
JSON, taken by a new ProgramRuntime on a new loop (as the new image does, with the same
descriptors), they show the same status, and the timers, channels and ledger that came
through go on working."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from qsupervisor.master.loop import EventLoop
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.status import program_status
from qsupervisor.master.totals import ProgramTotals
from qsupervisor.states import ProgramState, WorkerState
from tests.unit.config_files import program
from tests.unit.fakes import World

P, W = ProgramState, WorkerState
VOLATILE = ("rss", "uptime", "leader_uptime")


def running(world: World, workers: int = 3, **settings: Any) -> ProgramRuntime:
    runtime = ProgramRuntime(program("orders", workers=workers, **settings), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    return runtime


def view(runtime: ProgramRuntime, world: World) -> dict[str, Any]:
    status = program_status(runtime, world.clock)
    for worker in status["workers"]:
        for key in VOLATILE:
            worker.pop(key, None)
    status.pop("leader_uptime")
    return status


def hand_over(runtime: ProgramRuntime, world: World) -> ProgramRuntime:
    """What a re-exec does to the program: its state through JSON; the old objects let go
    of their descriptors without closing them (the exec keeps them open), and the new
    image's loop has only what the new records arm."""
    state = json.loads(json.dumps(runtime.export_state()))
    totals = ProgramTotals()
    totals.load_state(json.loads(json.dumps(runtime.pool.totals.export_state())))
    socks: list[socket.socket] = [p.sock for p in
                                  [runtime.leader, runtime.pending_leader, *runtime.old_leaders]
                                  if p is not None]
    socks += [w.channel for w in runtime.pool.all_known() if w.channel is not None]
    for sock in socks:
        sock.detach()
    world.loop = EventLoop(world.clock)
    world.pids.clear()
    taken = ProgramRuntime(runtime.config, world, totals)
    taken.load_state(state)
    return taken


def test_a_running_program_with_a_job_a_backoff_and_a_crash_comes_through_unchanged() -> None:
    world = World()
    runtime = running(world)
    world.worker(0).start_job("job-in-hand")
    world.worker(2).start_job("done-job")
    world.worker(2).stats.job_finished(0)  # its count must show after the hand-over too
    world.worker(2).start_job("lost-job")
    world.worker(2).exit(sig=9)  # dies holding its message: recorded in the crash ledger
    world.run()
    assert runtime.slot(2).worker.state is W.BACKOFF  # type: ignore[union-attr]
    before = view(runtime, world)

    taken = hand_over(runtime, world)
    assert view(taken, world) == before
    assert [w["jobs"] for w in before["workers"]] == [0, 0, 1]
    assert set(world.pids) == {world.leader().pid, world.worker(0).pid, world.worker(1).pid}

    # The backoff timer came through at its deadline: slot 2 restarts after 1 s, not before.
    world.advance(0.9)
    assert taken.slot(2).worker.state is W.BACKOFF  # type: ignore[union-attr]
    world.advance(0.2)
    assert taken.slot(2).worker.state is W.RUNNING  # type: ignore[union-attr]
    # The crash ledger came through, and the channels work both ways.
    world.worker(2).send(op="crashes", rid=7, id="lost-job")
    world.run()
    assert world.worker(2).received() == [{"rid": 7, "count": 1, "how": "signal SIGKILL"}]
    # A worker's exit reaches the new records through its leader's channel.
    world.worker(1).exit(0, reason="max_jobs")
    world.run()
    assert taken.pool.totals.exits["max_jobs"] == 1
    assert taken.slot(1).worker.state is W.RUNNING  # type: ignore[union-attr]


def test_a_rolling_reload_and_a_stop_timeout_carry_over() -> None:
    world = World(auto_ready=False)
    runtime = running(world, workers=2, stop_timeout=30.0)
    world.leader().ready()
    world.run()
    for worker in world.workers():
        worker.ready()
    world.run()
    old = list(world.workers())
    runtime.reload(preload=False)
    world.run()
    new = [w for w in world.workers() if w not in old]
    world.obedient = False  # a drained worker ignores SIGTERM: only its kill timer ends it
    new[0].ready()
    world.run()  # slot 0's predecessor drains; slot 1's still runs beside its successor
    before = view(runtime, world)
    assert runtime.superseded() and runtime.draining()

    taken = hand_over(runtime, world)
    assert view(taken, world) == before
    new[1].ready()
    world.run()
    assert not taken.superseded()  # slot 1's predecessor drains too, now
    world.advance(29)
    assert not old[0].exited
    world.obedient = True  # SIGKILL ends it
    # stop_timeout: slot 0's kill timer was armed before the hand-over; without its
    # deadline carried over, nothing would ever end a worker that ignores SIGTERM.
    world.advance(1.5)
    assert old[0].exited
    assert taken.pool.totals.exits["killed"] == 2 and taken.steady()


def test_the_master_keeps_a_segment_descriptor_per_live_worker_only() -> None:
    """It holds each worker's stats descriptor to hand it over, and lets it go when the
    worker exits: recycling does not leak descriptors."""
    world = World()
    runtime = running(world, workers=2)
    world.run()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        fake = world.worker(0)
        fake.exit(0, reason="max_jobs")
        fake.stats.close()  # the fake worker's own mapping (a real one dies with it)
        world.run()
    assert runtime.slot(0).worker.state is W.RUNNING  # type: ignore[union-attr]
    assert len(os.listdir("/proc/self/fd")) <= before
