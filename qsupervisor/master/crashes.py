"""Which messages were in hand when their worker died.

A worker that dies mid-job cannot record that its message failed; the master can, because
it reads the dead worker's stats segment (the id of the job it was running). When the
broker redelivers that message, the worker that receives it asks here, and counts the
crash as a failed attempt, so a message that kills every worker ends dead-lettered
instead of looping forever.
"""

from __future__ import annotations

import collections

MAX_ENTRIES = 10_000  # bounded: ids of messages that never come back must not pile up


class CrashLedger:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, str]] = {}
        self._order: collections.deque[str] = collections.deque()

    def record(self, message_id: str, how: str) -> None:
        count, _ = self._counts.get(message_id, (0, ""))
        if count == 0:
            self._order.append(message_id)
        self._counts[message_id] = (count + 1, how)
        while len(self._order) > MAX_ENTRIES:
            self._counts.pop(self._order.popleft(), None)

    def take(self, message_id: str) -> tuple[int, str]:
        """The crashes recorded for a message, forgotten once told: the worker asking
        folds them into the message's attempt count."""
        entry = self._counts.pop(message_id, None)
        if entry is None:
            return 0, ""
        try:
            self._order.remove(message_id)
        except ValueError:
            pass
        return entry

    def export_state(self) -> list[list[object]]:
        """Oldest first, as a re-exec hands the ledger over."""
        return [[message_id, *self._counts[message_id]] for message_id in self._order]

    def load_state(self, entries: list[list[object]]) -> None:
        for message_id, count, how in entries:
            self._counts[str(message_id)] = (int(count), str(how))  # type: ignore[call-overload]
            self._order.append(str(message_id))

    def __len__(self) -> int:
        return len(self._counts)
