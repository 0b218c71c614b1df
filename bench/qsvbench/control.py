"""Control latency: `qsupervisorctl status` as a whole process (interpreter start, imports,
request, reply, rendering), and the protocol round trip alone
(qsupervisor.ctl.client.Client in this process), at 8 and 256 workers.

Whole-process timings come from our own repeated fork+exec+wait (time.perf_counter around
subprocess.run), and also from hyperfine when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from .common import QSUPERVISORCTL, Broker, Settings, median, percentile
from .daemon import Daemon, program


def time_command(argv: list[str], runs: int,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    subprocess.run(argv, capture_output=True, env=env)  # warm the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": median(times), "p90_ms": percentile(times, 90),
            "min_ms": min(times), "runs": runs}


def hyperfine(argv: list[str], runs: int) -> dict[str, Any] | None:
    exe = shutil.which("hyperfine")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "h.json"
        command = " ".join(argv)
        subprocess.run([exe, "--warmup", "3", "--runs", str(runs), "-N", "-i", "--export-json",
                        str(out), command], capture_output=True, check=True)
        result = json.loads(out.read_text())["results"][0]
    return {"median_ms": result["median"] * 1000, "mean_ms": result["mean"] * 1000,
            "stddev_ms": (result.get("stddev") or 0) * 1000, "min_ms": result["min"] * 1000,
            "runs": runs}


def time_calls(call: Callable[[], Any], runs: int) -> dict[str, Any]:
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": median(times), "p90_ms": percentile(times, 90), "min_ms": min(times),
            "runs": runs}


def import_times(runs: int) -> dict[str, Any]:
    """The floor under any Python CLI (the interpreter starting) and what importing the
    ctl adds, plus the biggest imports by -X importtime (cumulative, in ms)."""
    bare = time_command([sys.executable, "-c", "pass"], runs)
    ctl = time_command([sys.executable, "-c", "import qsupervisor.ctl.main"], runs)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import qsupervisor.ctl.main"],
                          capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match[2]) / 1000, len(match[3]) // 2, match[4]))
    top = [{"module": m, "cumulative_ms": round(c, 1)} for c, depth, m in
           sorted(rows, reverse=True) if depth <= 2][:12]
    # As a development checkout runs it when PYTHONDONTWRITEBYTECODE is set: qsupervisor's
    # own modules compiled at every start (the standard library keeps its installed .pyc).
    cold_env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    cold_env["PYTHONDONTWRITEBYTECODE"] = "1"
    cold = time_command([sys.executable, "-c", "import qsupervisor.ctl.main"], runs, env=cold_env)
    return {"python_bare_ms": bare["median_ms"], "import_ctl_ms": ctl["median_ms"],
            "import_ctl_cold_ms": cold["median_ms"], "importtime_top": top}


def measure(workers: int, runs: int) -> dict[str, Any]:
    broker = Broker()
    queue = broker.new_queue(f"ctl{workers}", "quorum")
    try:
        with Daemon({"bench": program(queue, "bench_handlers:noop", workers)}).start() as daemon:
            daemon.wait_settled("bench", timeout=300)
            status = [QSUPERVISORCTL, "-s", daemon.socket, "status"]
            result: dict[str, Any] = {
                "workers": workers,
                "ctl_status": time_command(status, runs),
                "ctl_status_json": time_command([*status[:3], "--json", "status"], runs),
                "ctl_version": time_command([*status[:3], "version"], runs),
                "hyperfine_status": hyperfine(status, runs),
                "rt_version": time_calls(lambda: daemon.client.call("version"), runs * 5),
                "rt_status": time_calls(lambda: daemon.client.call("status", {"names": []}),
                                        runs * 2),
                "rt_status_no_queues": time_calls(
                    lambda: daemon.client.call("status", {"names": [], "queues": False}),
                    runs * 5),
                # `qsupervisorctl status --brief`: totals, no entry per worker.
                "rt_status_brief": time_calls(
                    lambda: daemon.client.call("status", {"names": [], "workers": False}),
                    runs * 2),
                "ctl_status_brief": time_command([*status, "--brief"], runs),
                "status_reply_bytes": len(json.dumps(daemon.client.call("status", {"names": []}))),
            }
            return result
    finally:
        broker.close()


def run(settings: Settings, sizes: Sequence[int] = (8, 256)) -> dict[str, Any]:
    runs = 10 if settings.quick else 30
    if settings.quick:
        runs = min(runs, settings.repeats * 5)
        sizes = tuple(min(s, 16) for s in sizes)
    results = {"imports": import_times(runs), "sizes": []}
    for workers in sizes:
        results["sizes"].append(measure(workers, runs))
        r = results["sizes"][-1]
        settings.say(f"control N={workers}: status {r['ctl_status']['median_ms']:.1f} ms, "
                     f"round trip {r['rt_version']['median_ms']:.3f} ms (version), "
                     f"{r['rt_status']['median_ms']:.2f} ms (status)")
    return results
