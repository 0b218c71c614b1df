"""The master's event loop: timers fire in order, cancelled ones never, readers dispatch."""

from __future__ import annotations

import os

from qsupervisor.master.loop import EventLoop


def test_timers_fire_in_deadline_order_and_cancelled_ones_do_not() -> None:
    loop = EventLoop()
    fired: list[str] = []
    loop.call_later(0.02, lambda: fired.append("late"))
    loop.call_later(0.0, lambda: fired.append("early"))
    loop.call_later(0.01, lambda: fired.append("cancelled")).cancel()
    while len(fired) < 2:
        loop.run_once()
    assert fired == ["early", "late"]


def test_with_no_timers_the_loop_blocks_instead_of_polling() -> None:
    loop = EventLoop()
    assert loop._timeout() is None  # select() waits for an event: an idle master sleeps


def test_a_reader_is_called_when_its_fd_is_readable_and_can_be_removed() -> None:
    loop = EventLoop()
    r, w = os.pipe()
    got: list[bytes] = []
    loop.add_reader(r, lambda: got.append(os.read(r, 10)))
    os.write(w, b"hi")
    loop.run_once()
    assert got == [b"hi"]
    loop.remove_reader(r)
    os.write(w, b"again")
    loop.call_later(0.0, lambda: None)
    loop.run_once()
    assert got == [b"hi"]


def test_idle_callbacks_run_once_after_the_current_batch() -> None:
    loop = EventLoop()
    calls: list[int] = []
    callback = lambda: calls.append(1)  # noqa: E731
    loop.call_when_idle(callback)
    loop.call_when_idle(callback)
    loop.run_once()
    assert calls == [1]
