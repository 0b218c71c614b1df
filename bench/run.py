#!/usr/bin/env python3
"""Run qsupervisor's benchmarks against the local RabbitMQ and write docs/benchmarks.md.

    python bench/run.py                       # everything (about an hour on 2 cores)
    python bench/run.py --only throughput     # one part (comma-separated for several);
                                              # the other parts' results in --out are kept
    python bench/run.py --quick --out /tmp/b.md   # tiny sizes: checks that it all works

Parts: throughput, memory, control, reload, startup, delay, idle, handback, commands,
metrics, autoscale, reexec. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from qsvbench import (  # noqa: E402
    autoscale,
    commands,
    control,
    delay,
    handback,
    idle,
    machine,
    memory,
    metrics,
    reexec,
    reload,
    report,
    startup,
    throughput,
)
from qsvbench.common import BrokerRestarted, BrokerWatch, Settings  # noqa: E402

DEFAULT_OUT = BENCH_DIR.parent / "docs" / "benchmarks.md"
SELF_WATCHED = {"throughput"}  # re-runs single measurements itself after a broker restart


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", type=_csv, default=list(report.PARTS),
                        help=f"parts to run, comma-separated: {','.join(report.PARTS)}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: seconds per part, numbers meaningless")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of each comparison (default 3; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="Markdown file to write (default docs/benchmarks.md)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="throughput plot (default: next to --out, NAME-throughput.png)")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: write --out again from the results it holds")
    parser.add_argument("--workers", type=lambda t: [int(x) for x in _csv(t)], default=None,
                        help="throughput worker counts (default 1,2,4,8; 1,2 with --quick)")
    parser.add_argument("--queue-types", type=_csv, default=["quorum", "classic"],
                        help="throughput queue types (default quorum,classic)")
    parser.add_argument("--jobs", type=_csv, default=None,
                        help="throughput jobs (default noop,1ms,10ms; noop,10ms with --quick)")
    parser.add_argument("--handback-sizes", type=lambda t: [int(x) for x in _csv(t)],
                        default=None, help="handback: messages held when giving back "
                        "(default 10,50,200; 2,5 with --quick)")
    parser.add_argument("--steady", type=float, default=None,
                        help="autoscale: seconds the steady load is held (default 120; "
                        "10 with --quick)")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(report.PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.workers is None:
        args.workers = [1, 2] if args.quick else [1, 2, 4, 8]
    if args.jobs is None:
        args.jobs = ["noop", "10ms"] if args.quick else ["noop", "1ms", "10ms"]
    if args.handback_sizes is None:
        args.handback_sizes = list(handback.QUICK_SIZES if args.quick else handback.DEFAULT_SIZES)
    if args.plot is None:
        args.plot = args.out.with_name(args.out.stem + "-throughput.png")
    return args


def cache_bytecode() -> str:
    """Run every Python process of the benchmark with cached bytecode, as an installed
    package has it. A development environment with PYTHONDONTWRITEBYTECODE set would
    otherwise compile qsupervisor's modules at every daemon and qsupervisorctl start;
    the cache goes to a temporary directory, never into the source tree."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        return "cached (Python's default __pycache__ directories)"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or tempfile.mkdtemp(prefix="qsv-bench-pyc-")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    import qsupervisor
    package = Path(qsupervisor.__file__).resolve().parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package), str(BENCH_DIR / "apps")],
                   check=False, capture_output=True)
    # Standard library and site-packages modules land in the prefix on first import.
    subprocess.run([sys.executable, "-c", "import qsupervisor.ctl.main, qsupervisor.daemon.main, "
                    "qsupervisor.master.arbiter, qsupervisor.leader.forkserver, qsupervisor.worker.main"],
                   check=False, capture_output=True)
    return ("cached: PYTHONDONTWRITEBYTECODE was set in this environment, so the benchmark "
            "compiles everything into a PYTHONPYCACHEPREFIX first, as an installed package has it")


def run_parts(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Each part's results; a part that fails twice is left out."""
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "throughput": lambda: throughput.run(settings, workers=args.workers,
                                             queue_types=args.queue_types, jobs=args.jobs),
        "memory": lambda: memory.run(settings),
        "control": lambda: control.run(settings),
        "reload": lambda: reload.run(settings),
        "startup": lambda: startup.run(settings),
        "delay": lambda: delay.run(settings),
        "idle": lambda: idle.run(settings),
        "handback": lambda: handback.run(settings, sizes=args.handback_sizes),
        "commands": lambda: commands.run(settings),
        "metrics": lambda: metrics.run(settings),
        "autoscale": lambda: autoscale.run(settings, steady=args.steady),
        "reexec": lambda: reexec.run(settings),
    }
    parts: dict[str, Any] = {}
    for name in report.PARTS:
        if name not in args.only:
            continue
        for attempt in (1, 2, 3):  # again if the broker went away (another suite restarts it)
            settings.say(f"== {name} (load average {machine.load()['1m']})")
            before, started = machine.load(), time.monotonic()
            watch = BrokerWatch()
            try:
                result = runners[name]()
                if name not in SELF_WATCHED and not watch.intact():
                    raise BrokerRestarted(f"the broker restarted during {name}")
            except Exception:
                traceback.print_exc()
                settings.say(f"{name} failed (attempt {attempt} of 3)")
                time.sleep(5.0)
                continue
            finally:
                watch.close()
            parts[name] = {"result": result, "load_before": before,
                           "load_after": machine.load(), "duration_s": time.monotonic() - started,
                           "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M"),
                           "repeats": settings.repeats, "attempt": attempt,
                           "code": f"git {machine.git()}"}
            break
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        data = report.load_previous(args.out)
        if not data.get("parts"):
            print(f"bench: {args.out} holds no results", file=sys.stderr)
            return 1
        args.out.write_text(report.render(data, args.out, args.plot))
        return 0
    settings = Settings(quick=args.quick, repeats=args.repeats)
    bytecode = cache_bytecode()
    settings.say(f"machine: load average {machine.load()}")
    data = report.load_previous(args.out)
    data.setdefault("parts", {})
    data["machine"] = machine.describe()
    data["bytecode"] = bytecode
    done = run_parts(args, settings)
    data["parts"].update(done)
    lost = [name for name in args.only if name not in done]
    if not done:
        print("bench: every part failed; nothing written", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.render(data, args.out, args.plot))
    settings.say(f"wrote {args.out}" + (f" and {args.plot}" if "throughput" in done else ""))
    if lost:
        print(f"bench: failed: {', '.join(lost)} (earlier results, if any, kept)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
