"""The autoscaler in the master's real program and pool, on fake leaders and a manual
clock: it reads the leader's answer, scales up, drains idle workers first when it scales
down, holds on an unknown reading, is pinned by scale and released by --auto."""

from __future__ import annotations

from qsupervisor.config.model import Autoscale
from qsupervisor.master.autoscaler import INTERVAL
from qsupervisor.master.program import ProgramRuntime
from qsupervisor.master.status import program_status
from tests.unit.config_files import program
from tests.unit.fakes import World

FAST = Autoscale(cooldown_up=0.0, cooldown_down=0.0)


def autoscaled(world: World, low: int = 1, high: int = 4) -> ProgramRuntime:
    runtime = ProgramRuntime(program("orders", workers=low, workers_max=high,  # type: ignore[arg-type]
                                     autoscale=FAST), world)
    runtime.start()
    world.run()
    for worker in world.workers():
        worker.ready()
    world.run()
    return runtime


def tick(world: World) -> None:
    world.advance(INTERVAL)
    world.run()
    for worker in world.workers():
        if not worker.exited:
            worker.ready()
    world.run()


def test_a_backlog_scales_up_and_an_idle_queue_drains_the_idle_workers_first() -> None:
    world = World()
    runtime = autoscaled(world)
    world.queue_stats = {"ready": 5000, "consumers": 1}
    tick(world)
    assert runtime.desired == 2  # no rate yet: doubled each tick
    tick(world)
    assert runtime.desired == 4
    tick(world)
    assert runtime.desired == 4
    assert runtime.autoscaler.last is not None
    assert runtime.autoscaler.last.text.startswith("hold 4: wait ∞ > 10s, at max 4")
    # Slot 3's worker is busy, slot 1's and 2's are idle, slot 0's too: the idle ones go.
    busy = next(w for w in world.workers() if w.slot == 3 and not w.exited)
    busy.start_job("job-1")
    world.queue_stats = {"ready": 0, "consumers": 4}
    for _ in range(3):
        tick(world)
    assert runtime.desired == 1
    assert [w.pid for w in runtime.pool.draining if w.pid == busy.pid] == []
    kept = runtime.slot(0)
    assert kept is not None and kept.worker is not None and kept.worker.pid == busy.pid
    assert kept.worker.slot == 0


def test_an_unknown_reading_holds() -> None:
    world = World()
    runtime = autoscaled(world, 2, 6)
    world.queue_stats = {"error": "NOT_FOUND - no queue 'orders'"}
    tick(world)
    assert runtime.desired == 2
    assert runtime.autoscaler.last is not None
    assert runtime.autoscaler.last.text == \
        "hold 2: queue reading unknown (NOT_FOUND - no queue 'orders')"
    world.queue_stats = None  # the leader does not answer at all
    tick(world)
    tick(world)
    assert runtime.desired == 2
    assert "no answer from the leader" in runtime.autoscaler.last.reason


def test_scale_pins_and_auto_releases_and_status_shows_it() -> None:
    world = World()
    runtime = autoscaled(world)
    world.queue_stats = {"ready": 5000, "consumers": 1}
    runtime.scale(2)
    tick(world)
    tick(world)
    assert runtime.desired == 2
    view = program_status(runtime, world.loop.clock)["autoscale"]
    assert (view["min"], view["max"], view["current"], view["pinned"]) == (1, 4, 2, 2)
    runtime.scale_auto()
    tick(world)
    tick(world)
    assert runtime.desired == 4
    view = program_status(runtime, world.loop.clock)["autoscale"]
    assert view["pinned"] is None and view["target"] == 4
    assert view["last_decision"]["direction"] in ("up", "hold")


def test_new_bounds_apply_at_once_and_a_reload_keeps_the_count() -> None:
    world = World()
    runtime = autoscaled(world)
    world.queue_stats = {"ready": 5000, "consumers": 1}
    tick(world)
    tick(world)
    assert runtime.desired == 4
    runtime.apply_bounds(program("orders", workers=1, workers_max=2, autoscale=FAST))  # type: ignore[arg-type]
    assert runtime.desired == 2
    runtime.reload(preload=False)
    world.run()
    assert runtime.desired == 2
