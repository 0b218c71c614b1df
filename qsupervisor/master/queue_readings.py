"""The leader's readings of a program's queues, for `status`.

One request in flight per leader, shared by every `status` waiting for it: a burst of
status requests (a monitoring loop, 400 pipelined on one connection) used to send the
leader one `queue_stats` each, fill its channel, and wedge master and leader on each other.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from qsupervisor.channel import Op
from qsupervisor.master.outbox import Outbox
from qsupervisor.master.system import Clock

Reading = dict[str, Any]
# A request unanswered this long is given up: the next status asks again. The status
# commands that waited for it have replied without queue figures long before.
EXPIRY = 5.0  # seconds


class QueueReadings:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self._rid: int | None = None
        self._asked_at = 0.0
        self._waiting: list[Callable[[Reading], None]] = []

    def ask(self, outbox: Outbox, callback: Callable[[Reading], None]) -> bool:
        """`callback` gets the next reading; False if the leader cannot be asked."""
        now = self._clock.monotonic()
        if self._rid is not None and now - self._asked_at < EXPIRY:
            self._waiting.append(callback)
            return True
        rid = next(self._ids)
        try:
            outbox.send({"op": Op.QUEUE_STATS, "rid": rid})
        except OSError:
            return False
        self._rid, self._asked_at, self._waiting = rid, now, [callback]
        return True

    def answered(self, reading: Reading) -> None:
        if reading.get("rid") != self._rid:
            return  # an expired request's late answer
        waiting, self._waiting, self._rid = self._waiting, [], None
        for callback in waiting:
            callback(reading)

    def in_flight(self) -> bool:
        """A request not answered yet (and not expired): a `status` may be waiting for it."""
        return self._rid is not None and self._clock.monotonic() - self._asked_at < EXPIRY

    def forget(self) -> None:
        """The leader is gone: nobody will answer."""
        self._rid, self._waiting = None, []
