"""Worker and program states, and the transitions allowed between them.

Stdlib only, so that the master, the control tool and the tests can all import it cheaply.
The allowed transitions are data: a transition that is not in the table is a bug in the
master, and `transition()` raises instead of silently corrupting the picture that
`qsupervisorctl status` shows.
"""

from __future__ import annotations

import enum
from typing import Callable, Protocol, TypeVar


class WorkerState(str, enum.Enum):
    STARTING = "STARTING"  # forked (or asked for); not yet consuming
    RUNNING = "RUNNING"  # consumer attached: idle or busy with a job
    STOPPING = "STOPPING"  # asked to stop: finishing the job in hand
    EXITED = "EXITED"  # gone; recycled, stopped, or waiting for a decision
    BACKOFF = "BACKOFF"  # died unexpectedly; a restart is scheduled
    FATAL = "FATAL"  # failed to start too many times in a row; left alone until `start`


class ProgramState(str, enum.Enum):
    STOPPED = "STOPPED"  # no leader, no workers
    STARTING = "STARTING"  # leader importing its preload list
    RUNNING = "RUNNING"  # leader ready; workers are managed per slot
    STOPPING = "STOPPING"  # workers and leader draining
    FATAL = "FATAL"  # the leader could not start (a preload import failed, ...)


W = WorkerState
P = ProgramState

# A worker record never goes back to STARTING: every process the master asks for gets a
# new record, which starts there; the slot points at the newest and keeps the history.
WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    # STARTING -> RUNNING: the worker reported its consumer attached.
    # STARTING -> STOPPING: stop requested before it was ready.
    # STARTING -> EXITED: it died before becoming ready (counts toward FATAL).
    W.STARTING: frozenset({W.RUNNING, W.STOPPING, W.EXITED}),
    # RUNNING -> EXITED covers both a recycle (on purpose) and a crash.
    W.RUNNING: frozenset({W.STOPPING, W.EXITED}),
    W.STOPPING: frozenset({W.EXITED}),
    # EXITED -> BACKOFF: unexpected exit, restart later; EXITED -> FATAL: gave up.
    W.EXITED: frozenset({W.BACKOFF, W.FATAL}),
    # BACKOFF -> EXITED: the backoff passed (a new record is started), or a stop arrived.
    W.BACKOFF: frozenset({W.EXITED}),
    # FATAL -> EXITED: an explicit `start` (a new record is started) or a stop.
    W.FATAL: frozenset({W.EXITED}),
}

PROGRAM_TRANSITIONS: dict[ProgramState, frozenset[ProgramState]] = {
    P.STOPPED: frozenset({P.STARTING}),
    P.STARTING: frozenset({P.RUNNING, P.STOPPING, P.FATAL}),
    P.RUNNING: frozenset({P.STOPPING, P.STARTING}),  # RUNNING -> STARTING: leader replaced
    # A `start` during a stop is remembered and carried out once STOPPED.
    P.STOPPING: frozenset({P.STOPPED}),
    P.FATAL: frozenset({P.STARTING, P.STOPPED, P.STOPPING}),
}


class InvalidTransition(RuntimeError):
    pass


S = TypeVar("S", bound=enum.Enum)


class HasState(Protocol[S]):
    state: S


Logger = Callable[..., object]


def transition(obj: HasState[S], new: S, log: Logger | None = None, **context: object) -> None:
    """Move `obj` to `new`, checking the table and logging the change.

    A transition to the same state is a no-op, so callers need not guard against events
    that arrive twice (an exit reported by the leader and seen again by our own waitpid).
    """
    old = obj.state
    if old is new:
        return
    table: dict = WORKER_TRANSITIONS if isinstance(new, WorkerState) else PROGRAM_TRANSITIONS
    if new not in table[old]:
        raise InvalidTransition(f"{old.value} -> {new.value} is not allowed ({context})")
    obj.state = new
    if log is not None:
        log("state", old=old.value, new=new.value, **context)
