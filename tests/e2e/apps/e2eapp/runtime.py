"""Handlers of the worker-runtime tests (tests/e2e/test_runtime_*.py).

Every job first appends a ledger line with the time it started (`t`, time.time()) and the
message's `x-qsupervisor-due-at` (`due`, ms, for delayed messages), then does what its
payload (a JSON object) says:

- `sleep`: seconds to spend on the job;
- `block_while`: a path; the job runs until the test removes that file;
- `fail_while`: a path; the handler raises while that file exists (a poison message
  that a fix on disk cures);
- `kill`: the handler SIGKILLs its own worker;
- `exit_status`: the handler ends its worker's process with os._exit(that status);
- `hang`: the handler sits in time.sleep(3600), a C call no exception can interrupt;
- `hoard_mib`: allocate (and touch) that many MiB and keep them for the worker's life.

`raw` is the handler of programs with `format: raw`: it records the type and the bytes
it received.
"""

from __future__ import annotations

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
    ledger.record("runtime", ok=not failing, t=started, due=due, tag=spec.get("tag"))
    if spec.get("kill"):
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


def raw(body: Any) -> None:
    ledger.record("runtime", t=time.time(), type=type(body).__name__,
                  hex=bytes(body).hex() if isinstance(body, (bytes, bytearray)) else None)
