"""The broker work a leader does for its program: declaring the topology once when the
program starts, and reading queue depths for `status`.

Both happen in the leader, not the master, because a broker that hangs must never stall
the master's loop; and each uses a short-lived connection, because the leader forks
workers and a live connection must never be inherited across a fork.
"""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions

from qsupervisor.broker import connection, topology
from qsupervisor.config import DaemonConfig, ProgramConfig

STATS_TIMEOUT = 2.0  # seconds; `status` must answer even when the broker does not


def declare_topology(program: ProgramConfig, daemon: DaemonConfig,
                     kept: topology.KeptQueue | None = None) -> None:
    """Raises TopologyConflict (final) or BrokerUnreachable / AMQPError (retry later);
    `kept` is told of a queue used as an earlier qsupervisor declared it."""
    conn = connection.connect(daemon.broker, name=f"qsupervisor {program.name} leader")
    try:
        topology.declare(conn.channel, program, daemon.delay, kept=kept)
    finally:
        _close(conn)


def queue_stats(program: ProgramConfig, daemon: DaemonConfig) -> dict[str, Any]:
    """Depths of the program's queue and dead-letter queue, or the reason they are unknown."""
    try:
        conn = connection.connect(daemon.broker, name=f"qsupervisor {program.name} status",
                                  tune=_short_timeouts)
    except connection.BrokerUnreachable as exc:
        return {"error": str(exc)}
    try:
        queue = topology.queue_depth(conn.channel, program.queue)
        dead = topology.queue_depth(conn.channel, program.dead_letter_queue)
    except (pika.exceptions.AMQPError, OSError) as exc:
        return {"error": f"cannot read queue depths: {connection.describe_error(exc)}"}
    finally:
        _close(conn)
    return {"ready": _first(queue), "consumers": queue[1] if queue else None,
            "dead_letter_ready": _first(dead)}


def _short_timeouts(params: pika.URLParameters) -> None:
    params.socket_timeout = STATS_TIMEOUT
    params.stack_timeout = STATS_TIMEOUT
    params.connection_attempts = 1


def _first(depth: Any | None) -> int | None:
    return depth[0] if depth else None


def _close(conn: pika.BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except (pika.exceptions.AMQPError, OSError):
        pass
