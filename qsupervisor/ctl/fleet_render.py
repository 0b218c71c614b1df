"""`qsupervisorctl fleet` as a table: one line per daemon and program."""

from __future__ import annotations

from typing import Any

from qsupervisor.units import format_duration

COLUMNS = ("NODE", "PID", "PROGRAM", "STATE", "CONSUMING", "BUSY", "JOBS/S", "FAIL/MIN",
           "QUEUE", "HEARD")


def render_fleet(result: dict[str, Any]) -> str:
    if not result.get("available"):
        return f"fleet view unavailable: {result.get('error') or 'no answer'}"
    lines = []
    if not result.get("connected"):
        since = result.get("since")
        lasting = f" for {format_duration(since)}" if since else ""
        lines.append(f"fleet view stale: no broker connection{lasting} "
                     f"({result.get('error')}); as last heard:")
    rows = [COLUMNS]
    for node in result.get("nodes") or []:
        name = f"{node['node']} (stale)" if node.get("stale") else node["node"]
        heard = f"{format_duration(node.get('age') or 0)} ago"
        programs = node.get("programs") or []
        if not programs:
            rows.append((name, str(node.get("pid")), "-", "no programs", "", "", "", "", "",
                         heard))
        for program in programs:
            rows.append((name, str(node.get("pid")), _s(program.get("name")),
                         _s(program.get("state")),
                         f"{_s(program.get('consuming'))}/{_s(program.get('desired'))}",
                         _s(program.get("busy")), _rate(program.get("jobs_per_s")),
                         _s(program.get("failures_per_min")), _s(program.get("queue_depth")),
                         heard))
    if len(rows) == 1:
        lines.append("no daemon heard from yet")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
              for row in rows]
    if result.get("truncated"):
        lines.append(f"... and {result['truncated']} more daemons (use --json --program NAME)")
    return "\n".join(lines)


def _s(value: Any) -> str:
    return "?" if value is None else str(value)


def _rate(value: Any) -> str:
    return "?" if value is None else f"{value:.2f}"
