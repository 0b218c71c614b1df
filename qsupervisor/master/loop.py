"""The master's event loop: one selector, a timer heap and a signal wake-up fd.

No fixed-interval polling: the select timeout is the time to the next timer, or forever.
Signal handlers only write the signal number to the wake-up fd (Python does that for us
through `signal.set_wakeup_fd`); the loop hands the numbers to the owner.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import selectors
import signal
from collections.abc import Iterable
from typing import Any, Callable

from qsupervisor import logs
from qsupervisor.master.system import Clock, SystemClock

log = logs.get("qsupervisor.master")

Callback = Callable[[], object]  # whatever a callback returns is ignored


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def deadline(timer: Timer | None) -> float | None:
    """A live timer's deadline, for the state a re-exec hands over; None when none."""
    return None if timer is None or timer.cancelled else timer.when


class EventLoop:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._watched: dict[int, tuple[Callback | None, Callback | None]] = {}
        self._idle: list[Callback] = []
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        self._on_signal: Callable[[int], None] = lambda _sig: None

    # -- signals ----------------------------------------------------------------------

    def handle_signals(self, signals: Iterable[int], on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        signal.set_wakeup_fd(self._signal_w)
        for sig in signals:
            signal.signal(sig, lambda *_: None)
        self.add_reader(self._signal_r, self._drain_signals)

    def take_signals(self) -> list[int]:
        """Signals received and not handled yet, taken from the wake-up fd (a re-exec
        queues them again in the kernel, where they outlive the exec)."""
        taken: list[int] = []
        while True:
            try:
                data = os.read(self._signal_r, 4096)
            except BlockingIOError:
                return taken
            if not data:
                return taken
            taken.extend(data)

    def _drain_signals(self) -> None:
        try:
            data = os.read(self._signal_r, 4096)
        except BlockingIOError:
            return
        for sig in data:
            _guarded(functools.partial(self._on_signal, sig))  # one failing signal must not eat the rest

    # -- readers, writers and timers -----------------------------------------------

    def add_reader(self, fileobj: Any, callback: Callback) -> None:
        self._watch(_fd(fileobj), 0, callback)

    def remove_reader(self, fileobj: Any) -> None:
        self._watch(_fd(fileobj), 0, None)

    def add_writer(self, fileobj: Any, callback: Callback) -> None:
        self._watch(_fd(fileobj), 1, callback)

    def remove_writer(self, fileobj: Any) -> None:
        self._watch(_fd(fileobj), 1, None)

    def _watch(self, fd: int, which: int, callback: Callback | None) -> None:
        old = self._watched.get(fd, (None, None))
        new = (callback, old[1]) if which == 0 else (old[0], callback)
        events = (selectors.EVENT_READ if new[0] else 0) | (selectors.EVENT_WRITE if new[1] else 0)
        if fd in self._watched:
            if events:
                self._selector.modify(fd, events)
            else:
                self._selector.unregister(fd)
        elif events:
            self._selector.register(fd, events)
        if events:
            self._watched[fd] = new
        else:
            self._watched.pop(fd, None)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.clock.monotonic() + max(0.0, delay), callback)

    def call_at(self, when: float, callback: Callback) -> Timer:
        """At a monotonic deadline: a timer handed over through a re-exec keeps its own
        (CLOCK_MONOTONIC is the system's, not the process's)."""
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_when_idle(self, callback: Callback) -> None:
        """Run after the current batch of events: used to re-check waiters once."""
        if callback not in self._idle:
            self._idle.append(callback)

    # -- running ----------------------------------------------------------------------

    def run_once(self, max_wait: float | None = None) -> None:
        """One batch of events, waiting for the next at most `max_wait` seconds (None:
        until the next timer, or forever)."""
        timeout = self._timeout()
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        for key, mask in self._selector.select(timeout):
            reader, writer = self._watched.get(key.fd, (None, None))
            if mask & selectors.EVENT_WRITE and writer is not None:
                _guarded(writer)
                reader = self._watched.get(key.fd, (None, None))[0]  # may have closed
            if mask & selectors.EVENT_READ and reader is not None:
                _guarded(reader)
        self._run_timers()
        while self._idle:
            idle, self._idle = self._idle, []
            for callback in idle:
                _guarded(callback)

    def _timeout(self) -> float | None:
        if self._idle:
            return 0.0
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - self.clock.monotonic())

    def _run_timers(self) -> None:
        now = self.clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                _guarded(timer.callback)


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


def _guarded(callback: Callback) -> None:
    """A bug in one handler (or a malformed message it did not expect) is logged and the
    loop goes on: a master that dies takes every worker of every program with it."""
    try:
        callback()
    except Exception:
        log.exception("internal error in the master loop; continuing")
