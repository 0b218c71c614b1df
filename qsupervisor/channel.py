"""The names of the messages on the channels between the master, its leaders and their
workers; ipc.py carries them. Both ends take the names from here, so a message cannot be
sent under one spelling and looked for under another. docs/architecture.md ("Channels")
lists each message's fields and what it means.

A message is one JSON object: `op` marks a request, `ev` an event. A request that expects
an answer carries a `rid`, which the answer repeats.
"""

from __future__ import annotations

from typing import Final

# The longest the master takes to answer a `crashes` question: it waits for the exit of a
# worker that still held the message (master/questions.py). The worker waits longer.
CRASH_ANSWER_BOUND: Final = 5.0


class Op:
    """Requests."""

    SPAWN: Final = "spawn"  # master -> leader, with the worker's channel and stats fds
    RETIRE: Final = "retire"  # master -> leader: exit after the last worker
    QUEUE_STATS: Final = "queue_stats"  # master -> leader, for status
    CRASHES: Final = "crashes"  # worker -> master: deaths recorded for a message id
    ANNOUNCE: Final = "announce"  # master -> herald: the summary to publish now
    FLEET: Final = "fleet"  # master -> herald, for `fleet`: every daemon heard
    REOPEN: Final = "reopen"  # master -> herald: reopen the log file (SIGUSR1)


class Ev:
    """Events."""

    # leader -> master
    WAITING: Final = "waiting"  # the broker cannot be reached yet
    QUEUE_KEPT: Final = "queue_kept"  # a queue an earlier release declared, used as it is
    TOPOLOGY_FAILED: Final = "topology_failed"
    PRELOAD_FILES: Final = "preload_files"
    PRELOAD_FAILED: Final = "preload_failed"
    READY: Final = "ready"  # the leader is ready to fork; a worker is consuming
    SPAWNED: Final = "spawned"
    SPAWN_FAILED: Final = "spawn_failed"
    EXITED: Final = "exited"  # a worker reaped, with its waitpid status
    QUEUE_STATS: Final = "queue_stats"  # the answer to Op.QUEUE_STATS
    # worker -> master
    BROKER_LOST: Final = "broker_lost"
    BROKER_BACK: Final = "broker_back"
    EXITING: Final = "exiting"  # leaving on purpose, with the reason
    UNSETTLED: Final = "unsettled"  # a job's outcome was lost with the broker connection
    # herald -> master
    FLEET: Final = "fleet"  # the answer to Op.FLEET
    # ipc.py's stand-in for a message that was not a JSON object
    GARBAGE: Final = "garbage"
