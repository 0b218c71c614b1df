"""The herald's picture of the fleet: the latest announcement of every daemon heard.

A daemon is *stale* once three of its own intervals have passed without a word from it
(one lost announcement is not news; three are), and is forgotten after ten. Each daemon's
own interval is used, not ours: a fleet may mix settings, and a daemon announcing every
60 s must not flicker stale on a reader announcing every 5 s. Ages are measured on the
herald's monotonic clock from when an announcement arrived, never from the sender's wall
clock, which may be off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qsupervisor.herald.announce import Announcement

STALE_AFTER = 3  # intervals unheard
DROP_AFTER = 10  # intervals unheard
MAX_NODES = 10_000  # a bound on memory whatever is published to the exchange


@dataclass(frozen=True)
class Heard:
    announcement: Announcement
    at: float  # the herald's monotonic clock


class FleetTable:
    def __init__(self) -> None:
        self._nodes: dict[str, Heard] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def heard(self, announcement: Announcement, now: float) -> None:
        """Keyed by node name: a daemon that restarts replaces its old self at once."""
        if announcement.node not in self._nodes and len(self._nodes) >= MAX_NODES:
            self.expire(now)
            if len(self._nodes) >= MAX_NODES:
                return
        self._nodes[announcement.node] = Heard(announcement, now)

    def expire(self, now: float) -> None:
        """Forget daemons unheard for DROP_AFTER of their intervals."""
        for node, heard in list(self._nodes.items()):
            if now - heard.at > DROP_AFTER * heard.announcement.interval:
                del self._nodes[node]

    def view(self, now: float) -> list[dict[str, Any]]:
        """Every daemon still remembered, by node name: its announcement, how long ago it
        was heard, and whether that makes it stale."""
        self.expire(now)
        rows = []
        for node in sorted(self._nodes):
            heard = self._nodes[node]
            age = now - heard.at
            rows.append({**heard.announcement.as_dict(), "age": round(age, 3),
                         "stale": age > STALE_AFTER * heard.announcement.interval})
        return rows
