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


def autoscaled(world: World, low: int = 1, high: int = 4,
               settings: Autoscale = FAST) -> ProgramRuntime:
    runtime = ProgramRuntime(program("orders", workers=low, workers_max=high,  # type: ignore[arg-type]
                                     autoscale=settings), world)
    runtime.start()
    world.run()
    for worker in world.workers():
        worker.ready()
    world.run()
    return runtime


def at_max(world: World, settings: Autoscale = FAST) -> ProgramRuntime:
    """An autoscaled {1, 4} program taken to 4 by a backlog: doubled on each tick (no rate
    yet), alone on the queue with every slot consuming, so no cooldown between."""
    runtime = autoscaled(world, settings=settings)
    world.queue_stats = {"ready": 5000, "consumers": 1}
    tick(world)
    tick(world)
    assert runtime.desired == 4
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
    runtime = at_max(world)
    runtime.apply_bounds(program("orders", workers=1, workers_max=2, autoscale=FAST))  # type: ignore[arg-type]
    assert runtime.desired == 2
    runtime.reload(preload=False)
    world.run()
    assert runtime.desired == 2


def test_scale_down_by_the_operator_drains_idle_workers_first() -> None:
    world = World()
    runtime = at_max(world)
    busy = next(w for w in world.workers() if w.slot == 3 and not w.exited)
    busy.start_job("job-1")
    runtime.scale(1)  # pinned at 1: the busy worker stays, as the autoscaler would keep it
    world.run()
    assert runtime.desired == 1
    kept = runtime.slot(0)
    assert kept is not None and kept.worker is not None and kept.worker.pid == busy.pid
    assert busy.pid not in [w.pid for w in runtime.pool.draining]


def test_status_says_when_a_scale_up_may_come_next() -> None:
    world = World()
    runtime = at_max(world, Autoscale(cooldown_up=6.0))  # 2→4 without the cooldown
    runtime.apply_bounds(program("orders", workers=1, workers_max=8,  # type: ignore[arg-type]
                                 autoscale=Autoscale(cooldown_up=6.0)))
    now = world.loop.clock.time()
    # Alone on the queue with every slot consuming: the next tick may scale up.
    view = program_status(runtime, world.loop.clock)["autoscale"]
    assert view["next_up_at"] == round(now, 3)
    # Another host's consumers on the queue: the cooldown applies, 6 s from the change
    # (made one tick ago).
    world.queue_stats = {"ready": 5000, "consumers": 9}
    tick(world)
    view = program_status(runtime, world.loop.clock)["autoscale"]
    assert runtime.autoscaler.last is not None and runtime.autoscaler.last.direction == "hold"
    assert view["next_up_at"] == round(world.loop.clock.time() + 6.0 - INTERVAL, 3)
