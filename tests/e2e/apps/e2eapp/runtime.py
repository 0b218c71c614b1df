"""Handlers of the worker-runtime tests (tests/e2e/test_runtime_*.py).

Every job first appends a ledger line with the time it started (`t`, time.time()) and the
message's `x-qsupervisor-due-at` (`due`, ms, for delayed messages), then does what its
payload (a JSON object) says:

- `sleep`: seconds to spend on the job;
- `block_while`: a path; the job runs until the test removes that file;
- `fail_while`: a path; the handler raises while that file exists (a poison message
  that a fix on disk cures);
- `kill`: the handler SIGKILLs its own worker;
- `kill_after`: a path; the job waits while that file exists, then SIGKILLs its worker
  (a death at the moment the test chooses);
- `exit_status`: the handler ends its worker's process with os._exit(that status);
- `hang`: the handler sits in time.sleep(3600), a C call no exception can interrupt;
- `hoard_mib`: allocate (and touch) that many MiB and keep them for the worker's life;
- `hold_gil`: whole seconds to spend in one C call that keeps the GIL (libc's sleep through
  ctypes.PyDLL, which, unlike CDLL, does not release it), like a long computation in C but
  as long on a busy machine as on an idle one; pika's I/O thread cannot answer heartbeats
  meanwhile. Then a second ledger line records the run's `end`. The start line of such a
  job lists, in `alive`, the pids of earlier runs of the same message that have no end line
  and whose process still exists: a run that overlaps another shows there, even when the
  other was killed before its end.

`raw` is the handler of programs with `format: raw`: it records the type and the bytes
it received.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from typing import Any

import qsupervisor
from e2eapp import ledger

DUE_AT = "x-qsupervisor-due-at"
BLOCK_LIMIT = 120.0  # a job blocked on a file gives up eventually, whatever the test did

_hoard: list[bytes] = []  # what `hoard_mib` keeps alive


def work(payload: Any) -> None:
    started = time.time()
    job = qsupervisor.current_job()
    due = job.headers.get(DUE_AT) if job else None
    spec = payload if isinstance(payload, dict) else {}
    failing = bool(spec.get("fail_while")) and os.path.exists(spec["fail_while"])
    extra = {"alive": _earlier_runs_alive(job.message_id)} if job and "hold_gil" in spec else {}
    ledger.record("runtime", ok=not failing, t=started, due=due, tag=spec.get("tag"), **extra)
    if "hold_gil" in spec:
        ctypes.PyDLL(None).sleep(int(spec["hold_gil"]))
        ledger.record("runtime", t=started, end=time.time(), tag="end")
    if spec.get("kill_after"):
        deadline = time.monotonic() + BLOCK_LIMIT
        while os.path.exists(spec["kill_after"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    if spec.get("kill") or spec.get("kill_after"):
        os.kill(os.getpid(), signal.SIGKILL)
    if "exit_status" in spec:
        os._exit(int(spec["exit_status"]))
    if spec.get("hang"):
        time.sleep(3600)
    if spec.get("hoard_mib"):
        # Multiplying writes every page: RSS grows by the full size (bytes(n) would not).
        _hoard.append(b"\x01" * (int(spec["hoard_mib"]) << 20))
    if spec.get("sleep"):
        time.sleep(float(spec["sleep"]))
    if spec.get("block_while"):
        deadline = time.monotonic() + BLOCK_LIMIT
        while os.path.exists(spec["block_while"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    if failing:
        raise RuntimeError(f"poisoned by {spec['fail_while']}")


def _earlier_runs_alive(message_id: str) -> list[int]:
    """Pids of this message's earlier runs, without an end line, whose process exists."""
    try:
        with open(os.environ["E2E_LEDGER"]) as ledger_file:
            lines = [json.loads(line) for line in ledger_file if line.endswith("}\n")]
    except FileNotFoundError:
        return []
    runs = [e for e in lines if e["id"] == message_id]
    ended = {(e["pid"], e["t"]) for e in runs if e.get("end") is not None}
    return sorted({e["pid"] for e in runs
                   if e.get("end") is None and (e["pid"], e["t"]) not in ended
                   and e["pid"] != os.getpid() and _exists(e["pid"])})


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a zombie counts: killed but not yet reaped is not over
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def raw(body: Any) -> None:
    ledger.record("runtime", t=time.time(), type=type(body).__name__,
                  hex=bytes(body).hex() if isinstance(body, (bytes, bytearray)) else None)
