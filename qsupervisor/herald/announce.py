"""The announcement a daemon publishes for the fleet view, and reading one back.

What goes out is built field by field from a fixed list (`encode`), never by passing on
what the master sent: the summary could grow a field one day, and nothing may reach the
broker unless it is named here. No broker URL, environment, payload or message id is
among them. What comes in is checked the same way (`decode`): any client on the virtual
host can publish to the exchange, so a body is untrusted input, bounded and typed before
it reaches the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FORMAT = 1  # the body's "v"; a reader skips bodies of a version it does not know
MESSAGE_TYPE = "qsupervisor.fleet.v1"  # the AMQP `type` property
MAX_BODY = 256 * 1024  # bytes; a daemon with hundreds of programs stays well under it
MAX_PROGRAMS = 500
MAX_TEXT = 255  # characters of any name or state

# name -> type, for each figure of a program; None is allowed for every one of them
# (queue_depth unknown while the broker cannot be read, for one).
PROGRAM_FIELDS: Mapping[str, type] = {
    "name": str, "state": str, "queue": str,
    "workers": int, "desired": int, "consuming": int, "busy": int,
    "jobs_per_s": float, "failures_per_min": int, "queue_depth": int,
}
DAEMON_FIELDS: Mapping[str, type] = {
    "node": str, "pid": int, "version": str, "uptime": float, "interval": float,
    "sent": float,
}


@dataclass(frozen=True)
class Announcement:
    """One daemon as it described itself."""

    node: str
    pid: int
    version: str
    uptime: float
    interval: float  # its announcement interval: how soon it counts as stale
    sent: float  # its wall clock when it published
    programs: tuple[Mapping[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "pid": self.pid, "version": self.version,
                "uptime": self.uptime, "interval": self.interval, "sent": self.sent,
                "programs": [dict(p) for p in self.programs]}


def encode(summary: Mapping[str, Any], depths: Mapping[str, int | None], sent: float) -> bytes:
    """The body published for the master's `summary` (master/fleet.py builds it), with the
    queue depths the herald read (by queue name) and the time it is sent."""
    programs = []
    for program in list(summary.get("programs") or [])[:MAX_PROGRAMS]:
        done = _number(program.get("done_last_minute")) or 0
        entry = {
            "name": program.get("name"), "state": program.get("state"),
            "queue": program.get("queue"), "workers": program.get("workers"),
            "desired": program.get("desired"), "consuming": program.get("consuming"),
            "busy": program.get("busy"),
            "jobs_per_s": round(done / 60.0, 3),
            "failures_per_min": program.get("failed_last_minute"),
            "queue_depth": depths.get(str(program.get("queue"))),
        }
        programs.append(_typed(entry, PROGRAM_FIELDS))
    body = _typed({"node": summary.get("node"), "pid": summary.get("pid"),
                   "version": summary.get("version"), "uptime": summary.get("uptime"),
                   "interval": summary.get("interval"), "sent": sent}, DAEMON_FIELDS)
    body = {"v": FORMAT, **body, "programs": programs}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(body: bytes) -> Announcement | None:
    """The announcement in `body`, or None when it is not one this version reads."""
    if len(body) > MAX_BODY:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        return None
    fields = _typed(data, DAEMON_FIELDS)
    node, pid, interval = fields["node"], fields["pid"], fields["interval"]
    if not node or pid is None or interval is None or interval <= 0:
        return None
    raw = data.get("programs")
    programs = tuple(_typed(p, PROGRAM_FIELDS) for p in raw[:MAX_PROGRAMS]
                     if isinstance(p, dict)) if isinstance(raw, list) else ()
    return Announcement(node=node, pid=pid, version=fields["version"] or "?",
                        uptime=fields["uptime"] or 0.0, interval=interval,
                        sent=fields["sent"] or 0.0, programs=programs)


def _typed(data: Mapping[str, Any], spec: Mapping[str, type]) -> dict[str, Any]:
    """Exactly the keys of `spec`, each of its type or None."""
    out: dict[str, Any] = {}
    for key, kind in spec.items():
        value = data.get(key)
        if kind is str:
            out[key] = value[:MAX_TEXT] if isinstance(value, str) and value.isprintable() else None
        elif kind is int:
            out[key] = value if isinstance(value, int) and not isinstance(value, bool) else None
        else:
            number = _number(value)
            out[key] = round(number, 3) if number is not None else None
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
