"""docs/benchmarks.md and the throughput plot, from the parts' result dicts.

The raw results are kept at the end of the Markdown file in an HTML comment, so that a
later `--only PART` run replaces that part and keeps the others.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from .common import BENCH_DIR, median

MARKER = "bench-results-json"
PARTS = ("throughput", "memory", "control", "reload", "startup", "delay", "idle", "handback",
         "commands", "metrics", "autoscale", "reexec")
COMMAND = "python bench/run.py"


def load_previous(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    match = re.search(rf"<!-- {MARKER}\n(.*?)\n-->", path.read_text(), re.S)
    if not match:
        return {}
    try:
        return json.loads(match.group(1))
    except ValueError:
        return {}


# -- formatting --------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _ok(met: bool | None) -> str:
    return "–" if met is None else ("**met**" if met else "**missed**")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _load(part: dict[str, Any]) -> str:
    before, after = part.get("load_before", {}), part.get("load_after", {})
    code = f", qsupervisor {part['code']}" if part.get("code") else ""
    return (f"{part.get('date', '')}{code}, load average (1 min) {before.get('1m', '?')} before, "
            f"{after.get('1m', '?')} after; "
            f"took {part.get('duration_s', 0):.0f} s{' (--quick)' if part.get('quick') else ''}")


# -- targets -----------------------------------------------------------------------------


def targets(parts: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def result(name: str) -> dict[str, Any] | None:
        part = parts.get(name)
        return part["result"] if part else None

    tp = result("throughput")
    if tp:
        ratios = [r["ratio"] for r in tp["summary"] if r["ratio"] is not None]
        worst = min(tp["summary"], key=lambda r: r["ratio"] or 0)
        noop = [r for r in tp["summary"] if r["job"] == "noop"]
        rows.append(["throughput ≥ 0.95 × plain pika at every N",
                     f"ratio {min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)} cases "
                     f"(worst: {worst['queue_type']} {worst['job']} N={worst['workers']}); "
                     f"no-op job: " + ", ".join(f"{r['queue_type'][0]}{r['workers']} "
                                                f"{r['ratio']:.2f}" for r in noop),
                     _ok(all(x >= 0.95 for x in ratios))])
    mem = result("memory")
    if mem:
        s = mem["summary"]
        rows.append([f"PSS of {s['workers']} preloaded workers ≤ 0.5 × {s['workers']} "
                     f"separate processes",
                     f"{s['qsupervisor_tree_mib']:.1f} MiB vs {s['plain_total_mib']:.1f} MiB: "
                     f"ratio {s['ratio']:.2f} ({s['ratio_with_master']:.2f} counting the master)",
                     _ok(s["ratio"] <= 0.5)])
    ctl = result("control")
    if ctl:
        big = max(ctl["sizes"], key=lambda s: s["workers"])
        rows.append([f"`status` ≤ 60 ms as a whole process at {big['workers']} workers",
                     f"{big['ctl_status']['median_ms']:.1f} ms (median of "
                     f"{big['ctl_status']['runs']})", _ok(big["ctl_status"]["median_ms"] <= 60)])
        rows.append(["protocol round trip ≤ 2 ms",
                     f"status request {big['rt_status']['median_ms']:.2f} ms at "
                     f"{big['workers']} workers (with queue depths, as qsupervisorctl asks), "
                     f"{big['rt_status_no_queues']['median_ms']:.2f} ms without, "
                     f"`status --brief` {_brief_round_trip(big)} ms; "
                     f"`version` {big['rt_version']['median_ms']:.3f} ms",
                     _ok(big["rt_status"]["median_ms"] <= 2)])
    rl = result("reload")
    if rl:
        s = rl["summary"]
        rows.append([f"reload of {rl['workers']} idle workers ≤ 0.5 s, consumers never "
                     f"below {rl['workers']}",
                     f"{s['ctl_s'] * 1000:.0f} ms (median, `qsupervisorctl reload` wall time; "
                     f"slowest {s['max_ctl_s'] * 1000:.0f} ms), lowest consumer count "
                     f"{s['min_consumers']}",
                     _ok(s["ctl_s"] <= 0.5 and s["min_consumers"] >= rl["workers"])])
    st = result("startup")
    if st:
        big = max(st["sizes"], key=lambda s: s["workers"])
        rows.append([f"{big['workers']} workers consuming ≤ 3 s after start",
                     f"{big['all_s']:.2f} s (median; a bare fork server: "
                     f"{_n(big.get('fork_floor_all_s'), 2)} s)", _ok(big["all_s"] <= 3)])
    dl = result("delay")
    if dl:
        s = dl["summary"]
        limit = s["resolution_s"] * 1000 + 100
        rows.append([f"delay lateness p99 ≤ resolution + 100 ms ({limit:.0f} ms)",
                     f"p99 {s['p99_ms']:.0f} ms (p50 {s['p50_ms']:.0f}, max {s['max_ms']:.0f}) "
                     f"over {s['messages']} delays of 0.1–{s['longest_delay_s']:g} s",
                     _ok(s["p99_ms"] <= limit)])
    idle = result("idle")
    if idle:
        s = idle["summary"]
        rows.append(["idle master ≤ 0.1 % of one core",
                     f"{s['master_pct_core']:.4f} % ({s['master_cpu_s'] * 1000:.1f} ms CPU in "
                     f"{s['window_s']:.0f} s, {s['workers']} idle workers)",
                     _ok(s["master_pct_core"] <= 0.1)])
    cmd = result("commands")
    if cmd:
        cases = [r for r in cmd["summary"] if r["ratio"] is not None]
        target = cmd.get("target", 0.9)
        rows.append([f"command program ≥ {target:g} × the bare `subprocess.run` loop (1 worker)",
                     ", ".join(f"{_CASES.get(r['case'], r['case'])} {r['ratio']:.2f} "
                               f"({_spread(r['pair_ratios'])})" for r in cases),
                     _ok(all(r["ratio"] >= target for r in cases)) if cases else "–"])
    met = result("metrics")
    if met:
        s = met["scrape"]
        rows.append([f"a metrics scrape at {s['workers']} workers ≤ 50 ms",
                     f"median {s['median_ms']:.2f} ms, max {s['max_ms']:.2f} ms "
                     f"over {s['runs']} scrapes", _ok(s["max_ms"] <= 50)])
        if met.get("on_vs_off"):
            change = (met["on_vs_off"] - 1) * 100
            rows.append(["throughput with metrics on within 2 % of off",
                         f"{change:+.1f} % (medians of {len(met['drains']) // 2} drains each; "
                         f"{_spread(met.get('pair_ratios', []))})",
                         _ok(abs(change) <= 2)])
    auto = result("autoscale")
    if auto:
        s = auto["summary"]
        # Judged on the worst of the pairs: a target met by the median alone is not met.
        drains = s.get("drain_ratios") or [s["drain_ratio"]]
        seconds = s.get("worker_seconds_ratios") or [s["worker_seconds_ratio"]]
        rows.append(["autoscaled burst drains within 1.25 × fixed max",
                     f"{s['drain_ratio']:.2f} × median, {max(drains):.2f} × worst of "
                     f"{len(drains)}", _ok(max(drains) <= 1.25)])
        rows.append(["autoscaled burst uses ≤ 0.6 × fixed max's worker-seconds",
                     f"{s['worker_seconds_ratio']:.2f} × median, {max(seconds):.2f} × worst "
                     f"of {len(seconds)}", _ok(max(seconds) <= 0.6)])
        rows.append([f"no change of direction on a steady load ({s['steady_s']:.0f} s)",
                     f"at most {s['steady_changes']} changes, "
                     f"{s['steady_direction_changes']} reversals in "
                     f"{s.get('steady_runs', 1)} runs", _ok(s["steady_direction_changes"] == 0)])
    rx = result("reexec")
    if rx:
        rows.extend(_reexec_targets(rx))
    return rows


def _reexec_targets(result: dict[str, Any]) -> list[list[str]]:
    sizes = result["sizes"]
    big = max(sizes, key=lambda s: s["workers"])
    limit = result.get("target_gap_ms", 200)
    plain, every = big["summary"]["reexec"], big["summary"]["reexec --all"]
    worst = max(plain["max_gap_ms"], every["max_exec_gap_ms"])
    rolling = big["summary"].get("reload --preload")
    reload_text = (f"; a plain `reload --preload`, {rolling['max_gap_ms']:.0f} ms)"
                   if rolling else ")")
    rows = [[f"control socket silent < {limit:.0f} ms during a re-exec at {big['workers']} "
             f"workers",
             f"`reexec`: longest gap {plain['gap_ms']:.0f} ms median, {plain['max_gap_ms']:.0f} "
             f"ms worst of {plain['runs']} (`took_ms` {plain['took_ms']:.0f} / "
             f"{plain['max_took_ms']:.0f}); `reexec --all`, around the exec: "
             f"{every['exec_gap_ms']:.0f} / {every['max_exec_gap_ms']:.0f} ms. Not counted: "
             f"`--all`'s rolling reload afterwards, worst gap {every['max_gap_ms']:.0f} ms "
             f"(see Findings{reload_text}",
             _ok(worst < limit)]]
    lows = [(s["workers"], mode, s["summary"][mode]["min_consumers"]) for s in sizes
            for mode in ("reexec", "reexec --all")]
    rows.append(["consumer count never below the configured workers during `reexec` and "
                 "`reexec --all`",
                 "; ".join(f"{mode} at {n}: lowest {low}" for n, mode, low in lows),
                 _ok(all(low is not None and low >= n for n, _, low in lows))])
    return rows


_CASES = {"true": "`/bin/true`", "php": "PHP job"}


def _spread(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"one pair {values[0]:.2f}"
    ordered = sorted(values)
    middle = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    return f"pairs {ordered[0]:.2f}–{ordered[-1]:.2f}, median pair {middle:.2f}"


# -- sections ------------------------------------------------------------------------------


def section_throughput(result: dict[str, Any], plot: str | None) -> str:
    rows = []
    for r in result["summary"]:
        p, q = r["plain"], r["qsupervisor"]
        rows.append([r["queue_type"], r["job"], str(r["workers"]), f"{r['backlog']:,}",
                     _n(p["median"]), _n(q["median"]), _n(r["ratio"], 2),
                     " ".join(f"{x:.2f}" for x in r["pair_ratios"]),
                     _n(p["consumer_cpu_us_per_msg"]), _n(q["consumer_cpu_us_per_msg"]),
                     _n(p["broker_cpu_us_per_msg"]), _n(q["broker_cpu_us_per_msg"]),
                     _ok(r["ratio"] >= 0.95) if r["ratio"] is not None else "–"])
    table = _table(["queue", "job", "N", "backlog", "plain pika msg/s", "qsupervisor msg/s",
                    "ratio", "ratio per repeat", "plain client CPU µs/msg",
                    "qsupervisor client CPU µs/msg", "broker CPU µs/msg (plain)",
                    "broker CPU µs/msg (qsupervisor)", "≥ 0.95"], rows)
    picture = f"\n![throughput against worker count]({plot})\n" if plot else ""
    return f"""## 1. Throughput

**How.** For each queue type, job and worker count N, a fresh durable queue is pre-filled
with small persistent JSON messages (`{{"n": i, "kind": "bench", "ok": true}}`, with a
`message_id`), then either N plain pika consumer processes
(`bench/apps/plain_consumer.py`: `BlockingConnection`, `basic_qos(prefetch_count=10)`,
`basic_consume`, `json.loads` of the body, the job, `basic_ack`) or a `qsupervisord -n` with
one program of N workers (`prefetch: 10`, same queue type, handler `bench_handlers:*`) drain
it. A separate connection samples the queue depth every 10 ms with passive declares; the
rate is the messages consumed between the depth falling to 90 % and to 10 % of the backlog,
divided by that time (if not every consumer is attached at the 90 % mark, the window starts
when the last one attaches). Start-up never counts. Jobs: `noop` (returns at once), `1ms`
and `10ms` (`time.sleep`); backlog 55,000 for `noop` and about 3 s of ideal work for the
sleeping jobs. Sides alternate which goes first; {result['repeats']} repeat(s); the table
shows medians, and "ratio per repeat" the qsupervisor/plain ratio of each back-to-back pair.
Client CPU is the consumer processes' utime+stime (workers only for qsupervisor) and broker
CPU the RabbitMQ VM's, between all consumers attached and the queue empty, per message.
{picture}
{table}
"""


def section_memory(result: dict[str, Any]) -> str:
    s = result["summary"]
    rows = [
        [f"qsupervisor: leader + {s['workers']} workers",
         _n(s["qsupervisor_tree_mib"], 1), _n(s["qsupervisor_worker_mib"], 1),
         _n(s["qsupervisor_worker_rss_mib"], 1), ", ".join(map(str, s["all_qsupervisor_mib"]))],
        [f"{s['workers']} separate plain pika processes", _n(s["plain_total_mib"], 1),
         _n(s["plain_process_mib"], 1), _n(s["plain_process_rss_mib"], 1),
         ", ".join(map(str, s["all_plain_mib"]))],
    ]
    return f"""## 2. Memory

**How.** Both sides import the same `preload` list — `{', '.join(s['preload'])}`
(`bench_ballast` builds a few MB of objects at import, a stand-in for an application's
models and tables) — and open an idle consumer on an empty quorum queue. qsupervisor: one
program, `preload:` that list, {s['workers']} workers; measured is the leader plus its
workers (the master is shared by every program and shown apart: {s['qsupervisor_master_mib']:.1f} MiB;
leader alone {s['qsupervisor_leader_mib']:.1f} MiB). Plain: {s['workers']} separate processes
(`plain_consumer.py --preload ...`). PSS from `/proc/PID/smaps_rollup`, 1 s after every
consumer attached; repeats alternate the sides; medians.

{_table(["side", "total PSS MiB", "PSS per worker MiB", "RSS per worker MiB", "each repeat (MiB)"], rows)}

Ratio: **{s['ratio']:.2f}** ({s['ratio_with_master']:.2f} if the master is counted too).
"""


def _brief_round_trip(size: dict[str, Any]) -> str:
    if "rt_status_brief" not in size:  # results from before --brief existed
        return "not measured"
    return f"{size['rt_status_brief']['median_ms']:.2f}"


def _brief(size: dict[str, Any]) -> str:
    """The table cell: round trip / whole process."""
    if "ctl_status_brief" not in size:
        return "not measured"
    return f"{_brief_round_trip(size)} / {size['ctl_status_brief']['median_ms']:.1f}"


def section_control(result: dict[str, Any]) -> str:
    rows = []
    for s in result["sizes"]:
        hf = s.get("hyperfine_status")
        rows.append([str(s["workers"]),
                     f"{s['ctl_status']['median_ms']:.1f} (p90 {s['ctl_status']['p90_ms']:.1f})",
                     f"{s['ctl_status_json']['median_ms']:.1f}",
                     f"{hf['median_ms']:.1f} ± {hf['stddev_ms']:.1f}" if hf else "not installed",
                     f"{s['ctl_version']['median_ms']:.1f}",
                     f"{s['rt_status']['median_ms']:.2f}",
                     f"{s['rt_status_no_queues']['median_ms']:.2f}",
                     _brief(s),
                     f"{s['rt_version']['median_ms']:.3f}",
                     f"{s['status_reply_bytes']:,}"])
    imp = result["imports"]
    top = ", ".join(f"`{t['module']}` {t['cumulative_ms']:.1f}" for t in imp["importtime_top"][:10])
    cold = imp.get("import_ctl_cold_ms")
    cold_text = (f" Without cached bytecode (`PYTHONDONTWRITEBYTECODE=1` and no `__pycache__`, as "
                 f"in a fresh development checkout) the import takes {cold:.1f} ms."
                 if cold else "")
    return f"""## 3. Control latency

**How.** A daemon with one program of N idle workers. Whole process: `qsupervisorctl -s
SOCKET status` (and `--json status`, `version`) run with `subprocess.run`, timed from before
the fork to after the exit, repeated; also with hyperfine (`-N`, 3 warm-ups) when installed.
Round trip: `qsupervisor.ctl.client.Client.call(...)` in the benchmark process (connect,
request, reply, close) — `status` as qsupervisorctl sends it (the leader then reads the queue
depths from the broker), `status` with `queues: false`, `status` with `workers: false` (what
`qsupervisorctl status --brief` sends: totals without an entry per worker; also timed as a
whole process), and `version` (no work in the master).
Medians in ms.

{_table(["workers", "`qsupervisorctl status`", "`--json status`", "hyperfine `status`", "`version`", "round trip `status`", "round trip `status` no queues", "`status --brief`: round trip / whole process", "round trip `version`", "status reply bytes"], rows)}

Where the whole-process time goes: the bare interpreter (`python -c pass`) takes
{imp['python_bare_ms']:.1f} ms and `python -c "import qsupervisor.ctl.main"`
{imp['import_ctl_ms']:.1f} ms (bytecode cached). Biggest imports by `python -X importtime`
(cumulative ms): {top}.{cold_text}
"""


def section_reload(result: dict[str, Any]) -> str:
    s = result["summary"]
    rows = [[str(i + 1), f"{r['ctl_s'] * 1000:.0f}", f"{r['replaced_s'] * 1000:.0f}",
             str(r["min_consumers"]), str(r["max_consumers"])] for i, r in enumerate(result["runs"])]
    return f"""## 4. Reload

**How.** A daemon with one program of {result['workers']} idle workers on a quorum queue;
`qsupervisorctl -s SOCKET reload bench` (it waits until the reload is complete) is run
{len(result['runs'])} times, 0.5 s apart. Measured: the command's wall time (process start
included); the time from launching it until every old worker has exited (polling `/proc`
every 2 ms, so that watching does not load the master), after which `status` must show
{result['workers']} new pids RUNNING; and the queue's consumer count, sampled every ~5 ms on
another connection, from the launch until the command returned.

{_table(["run", "`reload` wall ms", "old workers all gone ms", "lowest consumers", "highest consumers"], rows)}

Median `reload` {s['ctl_s'] * 1000:.0f} ms; old workers gone after {s['replaced_s'] * 1000:.0f} ms
(median); consumers never below **{s['min_consumers']}**.
"""


def section_startup(result: dict[str, Any]) -> str:
    rows = []
    for s in result["sizes"]:
        cpu = s.get("cpu_s") or {}
        rows.append([str(s["workers"]), _n(s["first_s"], 2), _n(s["half_s"], 2), _n(s["all_s"], 2),
                     " ".join(f"{r['all_s']:.2f}" for r in s["runs"]),
                     _n(s.get("fork_floor_all_s"), 2), _n(s.get("plain_all_s"), 2),
                     f"{_n(cpu.get('master'), 2)} / {_n(cpu.get('leader'), 2)} / "
                     f"{_n(cpu.get('workers'), 2)} / {_n(cpu.get('broker'), 2)}"])
    return f"""## 5. Start-up

**How.** The queue and the program's topology exist (declared by an unmeasured first start).
Timed from launching `qsupervisord -n -c FILE` until the queue's consumer count (passive
declares every 10 ms) reaches N. For comparison, on the same queue: a bare fork server
(`bench/apps/fork_consumers.py`: one Python process imports pika and forks N children that
each connect, `basic_qos`, `basic_consume` — no supervision at all), alternated with the
daemon, and once, N separate `plain_consumer.py` processes started at the same time. CPU:
what the master, the leader and all workers had used when the last consumer attached
(`/proc/PID/task/*/schedstat`; the master's includes its own interpreter start and
imports), and what the RabbitMQ VM used over the same time (utime+stime). Seconds; medians.
Starting N separate processes raises the load average by itself: it shows in the next
part's "before".

{_table(["workers", "first consumer", "half", "all N", "each run (all N)", "bare fork server", "N separate processes", "CPU s master / leader / workers / broker"], rows)}
"""


def section_delay(result: dict[str, Any]) -> str:
    s = result["summary"]
    rows = [[label, str(r["count"]), f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}"]
            for label, r in s["by_range"].items()]
    rows.append(["all", str(s["messages"]), f"{s['p50_ms']:.0f}", f"{s['p99_ms']:.0f}",
                 f"{s['max_ms']:.0f}"])
    return f"""## 6. Delay lateness

**How.** A program with 4 workers whose handler appends `time.time()` and the message's
`x-qsupervisor-due-at` header to a file. {s['messages']} messages with delays log-spaced from
0.1 s to {s['longest_delay_s']:g} s are published together with `qsupervisor.Publisher(...,
delay=DelayConfig(resolution={s['resolution_s']:g}))` (confirmed, {s['publish_s']:.2f} s for
all), through the delay chain. Lateness = handler start − due time (publish time + delay,
rounded up to the millisecond by the publisher). Nearest-rank percentiles, ms. Lowest
lateness {s['min_ms']:.0f} ms (the worker sends a message that arrives more than
{_n(s.get('early_tolerance_ms'), 0)} ms before it is due back to wait); {s['runs']} runs for
{s['messages']} messages.

{_table(["delays", "messages", "p50 ms", "p99 ms", "max ms"], rows)}
"""


def section_idle(result: dict[str, Any]) -> str:
    s = result["summary"]
    return f"""## 7. Idle master

**How.** A daemon with one program of {s['workers']} idle workers on an empty queue; 2 s after
every worker is RUNNING, the CPU time of the master, the leader and the workers is read at
the start and the end of a {s['window_s']:.0f} s window during which nothing talks to the
daemon. CPU time from `/proc/PID/task/*/schedstat` (ns, all threads); utime+stime from
`/proc/PID/stat` counts whole {s['tick_s'] * 1000:.0f} ms ticks and is shown for the master too.

{_table(["process", "CPU s in the window", "% of one core"], [
        ["master", f"{s['master_cpu_s']:.4f} (ticks: {s['master_cpu_ticks_s']:.2f})",
         f"{s['master_pct_core']:.4f}"],
        ["leader", f"{s['leader_cpu_s']:.4f}", f"{s['leader_cpu_s'] / s['window_s'] * 100:.4f}"],
        [f"{s['workers']} workers together", f"{s['workers_cpu_s']:.3f}",
         f"{s['workers_pct_core']:.3f}"],
    ])}
"""


def _ms_per_msg(method: dict[str, Any] | None) -> str:
    if method is None:
        return "–"
    return f"{_n(method['median_ms'], 2)} ({_n(method['us_per_msg'], 0)})"


def _stop_cost(result: dict[str, Any]) -> str:
    """The sentence on what the copy costs a stop, at N = 50 if measured."""
    quorum = [r for r in result["summary"] if r["queue_type"] == "quorum" and "copy" in r["methods"]]
    if not quorum:
        return ""
    row = next((r for r in quorum if r["n"] == 50), max(quorum, key=lambda r: r["n"]))
    copy, nack = row["methods"]["copy"], row["methods"]["nack"]
    way = result.get("worker_way", {}).get("quorum")
    where = ("the copy is what qsupervisor does on a quorum queue on this broker"
             if way == "copy" else "the copy is what qsupervisor does where "
             "`returns.nack_is_free` is false")
    return (f"**For a stop.** A worker with `prefetch: {row['n']}` on a quorum queue that stops\n"
            f"(or is recycled) holding {row['n']} unstarted messages spends "
            f"**{row['extra_ms_copy']:.1f} ms more**\ngiving them back as copies than with nacks "
            f"({copy['median_ms']:.1f} ms against {nack['median_ms']:.1f} ms,\n"
            f"{copy['us_per_msg']:,.0f} against {nack['us_per_msg']:,.0f} µs per message); "
            f"{where}.\nIt is paid once per stop, in proportion to what the worker holds (at most "
            f"its prefetch\nwindow), and nowhere else: a nack where that is free (classic queues, "
            f"RabbitMQ 4.3+)\ncosts what it always did.")


def section_handback(result: dict[str, Any]) -> str:
    timing, checks = [], []
    for r in result["summary"]:
        m = r["methods"]
        copy = m.get("copy")
        timing.append([r["queue_type"], str(r["n"]), _ms_per_msg(m.get("nack")),
                       _ms_per_msg(m.get("close")), _ms_per_msg(copy),
                       " ".join(f"{x:.1f}" for x in copy["all_ms"]) if copy else "–",
                       _n(r.get("ratio_copy_nack"), 1), _n(r.get("ratio_copy_close"), 1),
                       _n(r.get("extra_ms_copy"), 1)])
        for name, v in m.items():
            counts = (str(v["delivery_count_min"]) if v["delivery_count_min"] == v["delivery_count_max"]
                      else f"{v['delivery_count_min']}–{v['delivery_count_max']}")
            checks.append([r["queue_type"], str(r["n"]), name,
                           " ".join(str(c) for c in v["counts"]), str(v["lost"]),
                           str(v["duplicated"]), counts])
    ways = result.get("worker_way", {})
    worker = ", ".join(f"by {way} on a {qt} queue" for qt, way in ways.items())
    copies = [r for r in result["summary"] if "copy_ok" in r]
    verdict = ("every copy came back with x-delivery-count 0, none lost or duplicated"
               if copies and all(r["copy_ok"] for r in copies)
               else "**a copied return was lost, duplicated or counted**: see the table")
    return f"""## 8. Handing back prefetched messages

**How.** What a stopping consumer spends giving back the N messages it holds unacked but
never started. For each queue type and N, the queue is filled with N small persistent
messages and a consumer on its own connection (`basic_qos(prefetch_count=N)`,
`basic_consume`) waits until it holds all N, then cancels its consumer (as a stopping
worker does first). Timed from there until all N are given back, one of three ways, which
alternate which goes first: **nack**, one `basic_nack(tag, requeue=True)` per message (a
plain pika consumer that hands back; qsupervisor where `returns.nack_is_free`); **close**,
closing the channel (a plain pika consumer that just stops); **copy**,
`qsupervisor.broker.returns.return_as_copy` per message as the worker's `_hand_back` calls
it, on a confirm-mode channel opened beforehand on the same connection: the copy
published and confirmed, then the original acked. nack and copy end with one synchronous
round trip on the consuming channel (`basic_qos`), so the time covers the broker taking
every frame, not pika writing it; close is such a round trip itself. The classic queue is
the reference (no delivery limit: qsupervisor nacks there). After each hand-back the
consuming channel is closed (an original whose ack never arrived would come back now), the
queue counted by passive declare and emptied with `basic_get`, reading every message's id
and x-delivery-count. {result['repeats']} repeat(s); medians, ms per stop with µs per
message in brackets. On this broker, {result.get('broker', '?')}, qsupervisor
gives back {worker} (`returns.nack_is_free`).

{_table(["queue", "N", "nack ms (µs/msg)", "close ms (µs/msg)", "copy ms (µs/msg)", "copy each repeat ms", "copy / nack", "copy / close", "copy − nack ms"], timing)}

{_stop_cost(result)}

Afterwards: the queue's count by passive declare after each repeat (N expected), the
messages missing and the extra ones among those read back, and the x-delivery-count they
carried (a counted return shows 1: it used up one delivery of the limit). In this run
{verdict}.

{_table(["queue", "N", "way", "messages in the queue", "lost", "duplicated", "x-delivery-count"], checks)}
"""


def section_commands(result: dict[str, Any]) -> str:
    rows = []
    for r in result["summary"]:
        b, q, nb = r["bare"], r["qsupervisor"], r["no broker"]
        rows.append([_CASES.get(r["case"], r["case"]), f"{r['backlog']:,}",
                     _n(nb["median"], 1), _n(b["median"], 1), _n(q["median"], 1),
                     _n(r["ratio"], 2), " ".join(f"{x:.2f}" for x in r["pair_ratios"]),
                     f"{_n(b['min'], 1)}–{_n(b['max'], 1)}", f"{_n(q['min'], 1)}–{_n(q['max'], 1)}",
                     _n(r["bare_vs_no_broker"], 2),
                     _n(b["consumer_cpu_us_per_job"]), _n(q["consumer_cpu_us_per_job"]),
                     _ok(r["ratio"] >= result.get("target", 0.9)) if r["ratio"] is not None
                     else "–"])
    argv = result.get("argv", {})
    commands = "; ".join(f"{_CASES.get(c, c)}: `{' '.join(a)}`" for c, a in argv.items())
    return f"""## Command programs

**What.** A program that names [`command:`](configuration.md#command) runs one process per
job. Measured: jobs per second of one worker, against the physical limit of one fork and
exec per message, the bare loop anyone would write without qsupervisor
(`bench/apps/command_consumer.py`: a plain pika consumer, `basic_qos(prefetch_count=
{result['prefetch']})`, that for each message runs `subprocess.run(argv, input=body)` and
acks when it exited 0). Target: qsupervisor ≥ {result.get('target', 0.9):g} × the bare loop.

**How.** Commands: {commands} (`bench/apps/php_job.php` reads the body from stdin,
`json_decode`s it, checks a field and exits 0: a minimal real PHP job, the interpreter's
start-up included). A fresh durable {result.get('queue_type', 'quorum')} queue is
pre-filled with the backlog (small persistent JSON messages), then either the bare loop or
a `qsupervisord -n` with one program (`command:` the same argv, `workers: 1`,
`prefetch: {result['prefetch']}` on both sides so that neither waits for the broker between
jobs, no `timeout`) drains it. The rate is the jobs done between the queue depth (passive
declares every 20 ms on another connection) falling to 90 % and to 10 % of the backlog,
divided by that time: start-up never counts. Between the two sides, the same
`subprocess.run(argv, input=body)` loop runs as many times with no broker at all (a process
of its own, timed from the first run to the last), so that the broker's share shows.
The sides alternate which goes first; {result['repeats']} repeat(s); medians, with every
repeat's qsupervisor/bare ratio (each pair ran back to back) and the range of the rates.
Consumer CPU is the consumer process's own utime+stime per job (the worker's, all its
threads, for qsupervisor; the commands' own CPU is not in it).

{_table(["command", "jobs per sample", "no broker jobs/s", "bare loop jobs/s", "qsupervisor jobs/s", "ratio", "ratio per repeat", "bare range", "qsupervisor range", "bare / no broker", "bare CPU µs/job", "qsupervisor CPU µs/job", f"≥ {result.get('target', 0.9):g}"], rows)}
"""


def section_autoscale(result: dict[str, Any]) -> str:
    s, runs, steady = result["summary"], result["runs"], result["steady"]
    names = {"fixed_min": f"fixed min ({s['low']})", "fixed_max": f"fixed max ({s['high']})",
             "auto": f"autoscaled {{min: {s['low']}, max: {s['high']}}}"}
    rows = [[names[k], f"{r['drain_s']:.1f}", f"{r['worker_seconds']:,.0f}",
             f"{r.get('window_s', 0):.1f}", str(r["peak"]), str(r["end_workers"]),
             f"{r.get('publish_s', 0):.1f}"]
            for k, r in sorted(runs.items(), key=lambda kv: list(names).index(kv[0]))]
    settings = ", ".join(f"{k} {v}" for k, v in s["autoscale"].items())
    auto = runs["auto"]
    timeline = ", ".join(f"{n} at {t:g} s" for t, n in auto.get("counts", []))
    return f"""## Autoscaling

**How.** `bench/qsvbench/autoscale.py`. One program of {s['job_s'] * 1000:.0f} ms jobs
(`time.sleep`) on a quorum queue, run three ways one after the other: a fixed `min`, a
fixed `max`, and `workers: {{min: {s['low']}, max: {s['high']}}}` with {settings} (the
rest at their defaults). A burst of {s['burst']:,} persistent messages is published, each
confirmed, by one publisher; t = 0 is just before its first publish. What is counted,
identically for the three runs:

- *drain*: from t = 0 until the queue has no ready message and no worker holds one (polled
  every 0.25 s), so the time the burst takes to publish is in it;
- *worker-seconds*: live worker processes (draining ones included: they still hold a
  process) sampled from `status` every 0.25 s, from t = 0 (during the publishing too) to the
  end of the quiet period. That end is the same for every run: the burst at fixed max's full
  speed ({s['burst']:,} × {s['job_s'] * 1000:.0f} ms ÷ {s['high']}) plus {s['quiet_s']:.0f} s
  of quiet, i.e. the *window* column; a run that has not drained by then (fixed min) is
  counted until it drains. The quiet is in the window on purpose: what an autoscaled
  program saves is the workers it gives back there;
- *peak*: the most live workers in one sample; *at the end*: in the last one.

Then a steady load of {s['steady_rate']:.0f} jobs/s (40 % of max's capacity) for
{s['steady_s']:.0f} s on the autoscaled program, starting at min: every change of its
count and of direction.

{_table(["run", "drain s", "worker-seconds", "window s", "peak workers", "workers at the end", "burst published in s"], rows)}

**Autoscaled vs fixed max:** drain {s['drain_ratio']:.2f} × (target ≤ 1.25), worker-seconds
{s['worker_seconds_ratio']:.2f} × (target ≤ 0.6), medians of {len(s.get('drain_ratios', [1]))}
pairs run one after the other (drain {_runs(s.get('drain_ratios'))}; worker-seconds
{_runs(s.get('worker_seconds_ratios'))}); the table shows the pair with the median
worker-seconds. Its autoscaled run's live workers: {timeline or 'not recorded'}.

**Steady load** ({s.get('steady_runs', 1)} runs): at most {s['steady_changes']} changes and
{s['steady_direction_changes']} changes of direction in any run (target 0). Each run's
changes and the count every 2 s:

{_steadies(result.get('steadies') or [steady])}
"""


def _runs(ratios: list[float] | None) -> str:
    if not ratios:
        return "one run"
    return "runs " + ", ".join(f"{r:.2f}" for r in ratios) + " ×"


def _steadies(loads: list[dict[str, Any]]) -> str:
    return "\n".join(f"- {', '.join(load['directions']) or 'no change'}: "
                     f"{', '.join(str(c) for c in load['counts'])}" for load in loads)


def section_metrics(result: dict[str, Any]) -> str:
    s, w = result["scrape"], result["job_write"]
    rows = [[str(r["repeat"]), "on" if r["metrics"] else "off", f"{r['rate']:,.0f}",
             f"{r['consumer_cpu_us_per_msg']:.1f}" if r.get("consumer_cpu_us_per_msg") else "-",
             str(r.get("scrapes", 0)),
             f"{r['scrape_median_ms']:.2f}" if r.get("scrape_median_ms") else "-"]
            for r in result["drains"]]
    ratio_text = (f"{(result['on_vs_off'] - 1) * 100:+.1f} %" if result.get("on_vs_off")
                  else "not measured")
    return f"""## Metrics

**How.** `bench/qsvbench/metrics.py`. Scrape: a daemon with one program of
{s['workers']} idle no-op workers and `metrics: {{listen: ...}}`; `GET /metrics` over a new
connection each time (the endpoint closes after each reply), timed from before the connect
to the last byte, {s['runs']} times. Throughput: the throughput part's drain (a pre-filled
classic backlog of {result['backlog']:,} messages, {result['drain_workers']} workers,
`{result.get('job', 'noop')}` job, prefetch 10, the rate between 90 % and 10 % of the backlog) with
the endpoint off and on, interleaved (the order alternates per repeat); while on, a scraper
asks every second (Prometheus asks every 15 s to 1 min). The job is 2 ms of computation on
as many workers as cores: the workers use the whole machine, so whatever the endpoint
costs comes out of their throughput, and a rate bound by CPU alone is steady between runs
(a no-op or a 1 ms sleep drain, bound by the broker, varied by ±10–15 % between repeats,
too much to resolve 2 %).
Workers record each job's duration whether the endpoint is on or off, so that per-job cost
is measured apart: `Stats.job_started` + `job_finished` in a loop, with the histogram's
write and with it stubbed out.

**Scrape at {s['workers']} workers:** median {s['median_ms']:.2f} ms, p90 {s['p90_ms']:.2f} ms,
max {s['max_ms']:.2f} ms; {s['bytes']:,} bytes, {s['lines']:,} lines (target: ≤ 50 ms).

**Throughput, metrics on vs off:** median {result['rate_on']:,.0f} vs
{result['rate_off']:,.0f} msg/s, {ratio_text} (target: within 2 %); each repeat's on ÷ off:
{_spread(result.get('pair_ratios', []))}.

{_table(["repeat", "metrics", "msg/s", "worker CPU µs/msg", "scrapes", "scrape ms (median)"], rows)}

{_endpoint_cpu(result)}

**Per-job cost of the duration histogram:** {w['with_ns']:.0f} ns per job for the stats
segment's writes with it, {w['without_ns']:.0f} ns without: {w['histogram_ns']:.0f} ns per
job, a memory write and no system call: {_share(w, result)} of the worker CPU a job of the drain
costs here.
"""


def _endpoint_cpu(result: dict[str, Any]) -> str:
    cpu = result.get("endpoint_cpu")
    if not cpu:
        return "**Endpoint CPU:** not measured in this run."
    return (f"**Endpoint CPU** ({cpu['workers']} idle workers, {cpu['seconds']:.0f} s per run, "
            f"off and on alternating, medians): the master, leader and herald use "
            f"{cpu['off_ms_per_s']:.2f} ms of CPU per second with the endpoint off and "
            f"{cpu['on_ms_per_s']:.2f} ms with it on and scraped every second: "
            f"{cpu['per_scrape_ms']:.2f} ms per scrape, {cpu['machine_share'] * 100:.3f} % of "
            f"the machine at one scrape a second.")


def _share(write: dict[str, Any], result: dict[str, Any]) -> str:
    cpu = median([r["consumer_cpu_us_per_msg"] for r in result["drains"]
                  if r.get("consumer_cpu_us_per_msg")])
    return f"{write['histogram_ns'] / (cpu * 1000) * 100:.2f} %" if cpu else "a share not measured"


def section_reexec(result: dict[str, Any]) -> str:
    rows = []
    for size in result["sizes"]:
        for mode, s in size["summary"].items():
            exec_gap = (f"{_n(s.get('exec_gap_ms'))} / {_n(s.get('max_exec_gap_ms'))}"
                        if mode != "reload --preload" else "–")
            took = (f"{_n(s['took_ms'])} / {_n(s['max_took_ms'])}"
                    if mode != "reload --preload" else "–")
            rows.append([str(size["workers"]), f"`{mode}`", str(s["runs"]),
                         f"{_n(s['gap_ms'])} / {_n(s['max_gap_ms'])}", exec_gap, took,
                         _n(s.get("before_exec_ms")), _n(s["longest_wait_ms"]),
                         _n(s["floor_gap_ms"], 1), str(s["failures"]),
                         f"{_n(s['ctl_s'], 2)} / {_n(s['max_ctl_s'], 2)}",
                         f"{_n(s.get('master_cpu_ms'))} / {_n(s.get('master_runq_ms'))}",
                         f"{s['min_consumers']} / {_n(s.get('min_status_consuming'))}",
                         str(s["max_consumers"])])
    pause, interval = result.get("probe_pause_ms", 2), result.get("sample_interval_ms", 20)
    each = "\n".join(
        f"- {size['workers']} workers, `{mode}`: "
        + ", ".join(f"{_n(r.get('took_ms'))} → {_n(r.get('exec_gap_ms'))}"
                    + (f" (longest {_n(r['gap_ms'])} at {_n(r['gap_at_ms'] / 1000, 1)} s)"
                       if mode != "reexec" and r.get("gap_ms") is not None
                       and r["gap_ms"] > (r.get("exec_gap_ms") or 0) else "")
                    for r in size["runs"][mode])
        for size in result["sizes"] for mode in ("reexec", "reexec --all"))
    return f"""## Re-exec

**How.** `bench/qsvbench/reexec.py`. A daemon with one program of N idle no-op workers on a
quorum queue; `qsupervisorctl --json reexec`, `reexec --all` and, for comparison,
`reload --preload bench` (what `--all` does to each program after the exec, without one),
each as many times as *runs* says, in that order, 1 s apart and the daemon settled between
them; each run starts once the whole machine has been at most 15 % busy for 0.5 s (or
after 30 s), so that it does not measure the tail of the one before (256 workers exiting,
the broker closing their connections).

Socket: a separate client process (`bench/apps/socket_probe.py`) asks the control socket
without end, a new connection per request (a connection open across the exec is not handed
over) with a {pause:g} ms pause between requests: `version`, and every 50 ms a `status`
without worker entries or queue depths. A request made during the exec waits in the
socket's backlog until the new image answers it. *Longest gap*: the longest time between
two consecutive answers, from the launch until 0.5 s after the command returned; *around
the exec*: the longest gap over the exec itself (from the log's `re-executing` line to its
`qsupervisord re-executed`); *floor*: the
longest gap in the 0.5 s before the launch, what this client sees with nothing happening.
`took_ms`: the daemon's reply (from the exec to its records rebuilt, just before it serves
again); *before the exec*: from the request to the exec (settling and the pre-flight check,
during which the old image answers), from its log.

Consumers: the queue's consumer count from the broker (passive declares every
{interval:g} ms on another connection) and the program's `consuming` from the client's
`status` requests, over the same window. *Master CPU*: its CPU time, and its time
runnable but waiting for a CPU, from the launch to the reply (`/proc/PID/schedstat`).
After each `reexec` the master, leader and worker
pids must be unchanged; after `--all` and the reload, the master's the same and every
leader and worker pid new. Median / worst of the runs, in ms unless said.

{_table(["N", "command", "runs", "longest gap", "around the exec", "`took_ms`", "before the exec", "longest single wait", "floor", "failed requests", "command s", "master CPU ms / waiting for a CPU", "lowest consumers: broker / status", "highest consumers"], rows)}

Each run in order, `took_ms` → the gap around the exec (ms):

{each}
"""


SECTIONS: dict[str, Callable[..., str]] = {
    "memory": section_memory, "control": section_control, "reload": section_reload,
    "startup": section_startup, "delay": section_delay, "idle": section_idle,
    "handback": section_handback, "commands": section_commands,
    "metrics": section_metrics, "autoscale": section_autoscale, "reexec": section_reexec,
}


# -- the plot ----------------------------------------------------------------------------------


def plot_throughput(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = result["summary"]
    jobs = [j for j in ("noop", "1ms", "10ms") if any(r["job"] == j for r in summary)]
    fig, axes = plt.subplots(1, len(jobs), figsize=(5 * len(jobs), 4.2), squeeze=False)
    styles = {("plain", "quorum"): ("tab:blue", "--", "o"), ("qsupervisor", "quorum"): ("tab:blue", "-", "s"),
              ("plain", "classic"): ("tab:orange", "--", "o"),
              ("qsupervisor", "classic"): ("tab:orange", "-", "s")}
    for ax, job in zip(axes[0], jobs):
        for queue_type in ("quorum", "classic"):
            rows = sorted((r for r in summary if r["job"] == job and r["queue_type"] == queue_type),
                          key=lambda r: r["workers"])
            if not rows:
                continue
            for side in ("plain", "qsupervisor"):
                color, line, marker = styles[(side, queue_type)]
                label = f"{'plain pika' if side == 'plain' else 'qsupervisor'} ({queue_type})"
                ax.plot([r["workers"] for r in rows], [r[side]["median"] for r in rows],
                        color=color, linestyle=line, marker=marker, label=label)
        ax.set_title(f"job: {job}")
        ax.set_xlabel("workers (processes)")
        ax.set_ylabel("messages / s (median, steady state)")
        ax.set_xscale("log", base=2)
        counts = sorted({r["workers"] for r in summary})
        ax.set_xticks(counts)
        ax.set_xticklabels([str(n) for n in counts])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Throughput: qsupervisor vs N plain pika consumers (prefetch 10)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# -- the document -------------------------------------------------------------------------------


def _plot_still_current(part: dict[str, Any], path: Path) -> bool:
    """Without matplotlib, the plot an earlier run drew stays linked (`--only PART` must not
    drop it) as long as it is not older than the throughput results it shows."""
    try:
        measured = time.mktime(time.strptime(part.get("date", ""), "%Y-%m-%d %H:%M"))
        return path.stat().st_mtime >= measured
    except (OSError, ValueError, OverflowError):
        return False


def render(data: dict[str, Any], out: Path, plot_path: Path) -> str:
    machine, parts = data["machine"], data["parts"]
    plot_rel: str | None = None
    if "throughput" in parts and (plot_throughput(parts["throughput"]["result"], plot_path)
                                  or _plot_still_current(parts["throughput"], plot_path)):
        try:
            plot_rel = str(plot_path.resolve().relative_to(out.resolve().parent))
        except ValueError:
            plot_rel = str(plot_path.resolve())
    labels = [("cpu", "CPU"), ("cores", "cores"), ("ram_gib", "RAM (GiB)"), ("kernel", "kernel"),
              ("os", "OS"), ("python", "Python"), ("pika", "pika"), ("rabbitmq", "RabbitMQ"),
              ("qsupervisor", "qsupervisor (last run)"), ("date", "last run")]
    machine_rows = [[label, str(machine[key])] for key, label in labels if key in machine]
    text = [f"""# Benchmarks

Generated by `{COMMAND}` (see [bench/README.md](../bench/README.md)); every number below was
measured in the run described here, on the local RabbitMQ over loopback. Do not edit by hand:
run the suite again (`--only PART` re-runs one part and keeps the others).

## Machine

{_table(["", ""], machine_rows)}
| bytecode | {data.get('bytecode', '?')} |

Each part notes the load average around it: other work on the machine makes numbers noisy,
which is why both sides of every comparison run in the same part, alternating, and medians
are shown.

## Targets

{_table(["target", "measured", ""], targets(parts))}
"""]
    findings = BENCH_DIR / "FINDINGS.md"
    if findings.exists():
        text.append(findings.read_text().strip() + "\n")
    for name in PARTS:
        if name not in parts:
            continue
        part = parts[name]
        if name == "throughput":
            body = section_throughput(part["result"], plot_rel)
        else:
            body = SECTIONS[name](part["result"])
        text.append(body.rstrip() + f"\n\n_Run: {_load(part)}._\n")
    text.append(f"<!-- {MARKER}\n{json.dumps(data, sort_keys=True)}\n-->\n")
    return "\n".join(text)
