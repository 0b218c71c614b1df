"""The state machine: allowed transitions are data, anything else is refused loudly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from qsupervisor.states import (
    PROGRAM_TRANSITIONS,
    WORKER_TRANSITIONS,
    InvalidTransition,
    ProgramState,
    WorkerState,
    transition,
)

W = WorkerState
P = ProgramState


@dataclass
class Thing:
    state: Any


def test_every_state_has_a_row_in_its_table() -> None:
    assert set(WORKER_TRANSITIONS) == set(WorkerState)
    assert set(PROGRAM_TRANSITIONS) == set(ProgramState)


@pytest.mark.parametrize("path", [
    [W.STARTING, W.RUNNING, W.STOPPING, W.EXITED],  # graceful stop
    [W.STARTING, W.RUNNING, W.EXITED],  # recycled (max_jobs) or crashed
    [W.STARTING, W.EXITED, W.BACKOFF, W.EXITED],  # crash before ready, retried (new record)
    [W.STARTING, W.EXITED, W.FATAL, W.EXITED],  # gave up, then an explicit start or a stop
    [W.RUNNING, W.EXITED, W.BACKOFF, W.EXITED],  # stopped while waiting to restart
])
def test_worker_lifecycles_the_master_uses_are_allowed(path: list[WorkerState]) -> None:
    thing = Thing(path[0])
    for state in path[1:]:
        transition(thing, state)
    assert thing.state is path[-1]


@pytest.mark.parametrize("old,new", [
    (W.STOPPING, W.RUNNING),  # a stopping worker never resumes consuming
    (W.EXITED, W.RUNNING),
    (W.BACKOFF, W.RUNNING),
    (W.FATAL, W.RUNNING),
    # A record never starts again: the slot's next process is a new record.
    (W.EXITED, W.STARTING),
    (W.BACKOFF, W.STARTING),
    (W.FATAL, W.STARTING),
])
def test_worker_transitions_outside_the_table_raise(old: WorkerState, new: WorkerState) -> None:
    thing = Thing(old)
    with pytest.raises(InvalidTransition):
        transition(thing, new)
    assert thing.state is old


def test_program_cannot_skip_stopping_on_its_way_down() -> None:
    with pytest.raises(InvalidTransition):
        transition(Thing(P.RUNNING), P.STOPPED)


def test_a_transition_to_the_same_state_is_a_silent_no_op() -> None:
    events: list[tuple[str, dict]] = []
    thing = Thing(W.RUNNING)
    transition(thing, W.RUNNING, lambda event, **kw: events.append((event, kw)))
    assert thing.state is W.RUNNING and events == []


def test_transitions_are_logged_with_old_new_and_context() -> None:
    events: list[tuple[str, dict]] = []
    thing = Thing(W.STARTING)
    transition(thing, W.RUNNING, lambda event, **kw: events.append((event, kw)),
               program="orders", slot=2, pid=42)
    assert events == [("state", {"old": "STARTING", "new": "RUNNING", "program": "orders",
                                 "slot": 2, "pid": 42})]
