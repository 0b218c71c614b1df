"""Human-readable output of qsupervisorctl (`--json` prints the reply as it came)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from qsupervisor.ctl.fleet_render import render_fleet
from qsupervisor.units import format_duration, format_size


def render(cmd: str, result: Any) -> str:
    renderer = _RENDERERS.get(cmd)
    return renderer(result) if renderer else ""


def not_running(result: dict[str, Any], names: Iterable[str]) -> bool:
    """True if a named program lacks a RUNNING worker it should have, or is DEGRADED
    (fewer consumers than workers for a while): exit code 3."""
    programs = result.get("programs", {})
    for name in names:
        program = programs.get(name)
        if program is None or not program["desired"]:
            continue
        if program["state"] != "RUNNING" or program["running"] < program["desired"]:
            return True
    return False


def _status(result: dict[str, Any]) -> str:
    master = result["master"]
    herald = f"  herald {master['herald_pid']}" if master.get("herald_pid") else ""
    lines = [f"qsupervisord {master['version']}  pid {master['pid']}{herald}  "
             f"up {format_duration(master['uptime'])}  config {master['config']}"]
    for name, program in result["programs"].items():
        lines.extend(_program_lines(name, program, master["version"]))
    return "\n".join(lines)


def _program_lines(name: str, program: dict[str, Any], version: str) -> list[str]:
    leader = f"leader {program['leader_pid']}" if program["leader_pid"] else "no leader"
    lines = [f"{name:<16} {program['state']:<9} {leader:<13} "
             f"{program['running']}/{program['desired']} workers  "
             f"{program.get('consuming', 0)} consuming  queue {program['queue']}"]
    lines.append("  " + _queue_line(program))
    if program.get("autoscale"):
        lines.extend("  " + line for line in autoscale_lines(program["autoscale"]))
    if program.get("degraded"):
        lines.append(f"  degraded: {program['degraded']}")
    if program.get("error"):
        lines.append(f"  error: {program['error']}")
    if program["preload"].get("message"):
        lines.append(f"  {program['preload']['message']}")
    if _differs(program.get("leader_version"), version):
        lines.append(f"  leader runs qsupervisor {program['leader_version']} "
                     f"(the master {version}): reload --preload to refresh it")
    if program["workers"]:
        lines.extend("  " + _worker_line(worker, version) for worker in program["workers"])
    elif program.get("summary", {}).get("states"):  # status --brief
        lines.append("  " + _summary_line(program["summary"]))
    return lines


def autoscale_lines(view: dict[str, Any], now: float | None = None) -> list[str]:
    """`autoscale 1..6: 3 now, target 6, pinned 4` and the last decision, with when the
    count may next change."""
    now = time.time() if now is None else now
    head = (f"autoscale {view['min']}..{view['max']}: {view['current']} now, "
            f"target {view['target']}")
    if view.get("pinned") is not None:
        head += f", pinned at {view['pinned']} (scale --auto releases)"
    else:
        up = max(0.0, view["next_up_at"] - now)
        down = max(0.0, view["next_down_at"] - now)
        head += (f"; next change: up {'now' if up < 1 else 'in ' + format_duration(up)}, "
                 f"down {'now' if down < 1 else 'in ' + format_duration(down)}")
    lines = [head]
    last = view.get("last_decision")
    if last:
        ago = max(0.0, now - last["at"]) if last.get("at") else 0.0
        lines.append(f"last decision {format_duration(ago)} ago: {last['text']}")
    return lines


def _summary_line(summary: dict[str, Any]) -> str:
    states = ", ".join(f"{count} {state}" for state, count in sorted(summary["states"].items()))
    parts = [f"workers: {states}", f"{summary['busy']} busy"]
    if summary.get("rss"):
        parts.append(f"rss {format_size(summary['rss'])}")
    return "; ".join(parts)


def _queue_line(program: dict[str, Any]) -> str:
    stats = program.get("queue_stats") or {}
    if stats.get("error"):
        queue = f"queue: {stats['error']}"
    elif stats:
        queue = (f"queue: {_n(stats.get('ready'))} ready, {stats.get('unacked', 0)} unacked, "
                 f"{_n(stats.get('consumers'))} consumers; dead letters "
                 f"{_n(stats.get('dead_letter_ready'))}")
    else:
        queue = "queue: depth unknown"
    minute = program.get("last_minute") or {}
    return (f"{queue}  |  last minute: {minute.get('done', 0)} done, "
            f"{minute.get('failed', 0)} failed, {minute.get('retried', 0)} retried")


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def _differs(running: str | None, master: str) -> bool:
    """Whether a leader or worker runs another qsupervisor than the master (after the
    master re-executed an upgrade). Unknown (not ready yet, or an older release that did
    not say) is not shown."""
    return running is not None and running != master


def _worker_line(worker: dict[str, Any], version: str) -> str:
    parts = [f"worker {worker['slot']:<3}", f"pid {worker['pid'] or '-':<7}",
             f"{worker['state']:<8}"]
    if worker.get("uptime") is not None:
        parts.append(f"up {format_duration(worker['uptime'])}")
    parts.append(f"jobs {worker['jobs']}")
    if worker.get("failed"):
        parts.append(f"failed {worker['failed']}")
    if worker.get("rss"):
        parts.append(f"rss {format_size(worker['rss'])}")
    if worker.get("job"):
        job = worker["job"]
        parts.append(f"job {job['id']} ({format_duration(job['running_for'])})")
    if worker.get("restarts"):
        parts.append(f"restarts {worker['restarts']}")
    if worker.get("draining"):
        parts.append("draining")
    elif worker.get("superseded"):
        parts.append("replaced once its successor runs")
    if worker.get("node"):
        parts.append(f"node {_host_port(worker['node'])}")
    elif worker.get("state") == "RUNNING":
        parts.append("not consuming")
    if worker.get("broker_error"):
        parts.append(f"broker: {worker['broker_error']}")
    if worker.get("last_exit"):
        parts.append(f"last exit: {worker['last_exit']}")
    if _differs(worker.get("version"), version):
        parts.append(f"qsupervisor {worker['version']}")
    return "  ".join(parts)


def _host_port(url: str) -> str:
    """'rabbit-2:5672' of 'amqp://guest@rabbit-2:5672/%2F': the node, briefly."""
    return url.split("@")[-1].split("//")[-1].split("/")[0]


def _outcomes(result: dict[str, Any]) -> str:
    lines = [f"  {change}" for change in result.get("changes", [])]
    lines += [f"  warning: {warning}" for warning in result.get("warnings", [])]
    for name, outcome in result.get("programs", {}).items():
        if outcome.get("ok"):
            lines.append(f"{name}: ok ({outcome.get('state', '').lower()})")
        else:
            lines.append(f"{name}: FAILED")
            lines.extend(f"  {problem}" for problem in outcome.get("problems", []))
    return "\n".join(lines) or "no changes"


def _reread(result: dict[str, Any]) -> str:
    return "\n".join(result["changes"]) or "no changes"


def _pid(result: dict[str, Any]) -> str:
    programs = result.get("programs", {})
    if not programs:
        return str(result["master"])
    return "\n".join(f"{name}: leader {pids['leader']} workers "
                     + " ".join(str(p) for p in pids["workers"])
                     for name, pids in programs.items())


def _signal(result: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {result['signal']} sent to {len(pids)} workers"
                     for name, pids in result["pids"].items())


def _reexec(result: dict[str, Any]) -> str:
    head = (f"re-executed in {result['took_ms']:g} ms: pid {result['pid']}, qsupervisord "
            f"{result['previous']} -> {result['version']}")
    if "programs" not in result:
        return head
    return head + "\nreloaded with --preload:\n" + _outcomes(result)


_RENDERERS = {
    "status": _status,
    "start": _outcomes, "stop": _outcomes, "restart": _outcomes, "reload": _outcomes,
    "scale": _outcomes, "update": _outcomes,
    "reread": _reread,
    "pid": _pid,
    "signal": _signal,
    "tail": lambda r: r.get("data", "").rstrip("\n"),
    "version": lambda r: f"qsupervisord {r['version']} (protocol {r['protocol']})",
    "shutdown": lambda r: "shut down" if r.get("stopped") else "shutting down",
    "reopen": lambda r: "log files reopened",
    "fleet": render_fleet,
    "reexec": _reexec,
}
