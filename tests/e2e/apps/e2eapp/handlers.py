"""The test handler. The payload says what a job does:

- `sleep`: seconds to spend on the job (so that some jobs are in flight when a test acts);
- `print`: a line to print on stdout (captured output, `qsupervisorctl tail`);
- `fail`: raise with this text after recording the job (a handler that raises).

The code version recorded in the ledger comes from the module named by
$E2E_VERSION_MODULE (its VERSION constant): preloaded by the leader or imported fresh by
the worker, depending on the program's `preload:` list; that is what the reload tests see.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from e2eapp import ledger


def code_version() -> str:
    module = os.environ.get("E2E_VERSION_MODULE")
    if not module:
        return "static"
    return str(importlib.import_module(module).VERSION)


def run_job(payload: dict[str, Any], version: str | None = None) -> None:
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if payload.get("print"):
        print(payload["print"], flush=True)
    failure = payload.get("fail")
    ledger.record(version if version is not None else code_version(), ok=not failure)
    if failure:
        raise RuntimeError(f"e2e handler failure: {failure}")


def work(payload: dict[str, Any]) -> None:
    run_job(payload)


def print_notify_socket(payload: dict[str, Any]) -> None:
    """Prints what the worker sees of $NOTIFY_SOCKET (the systemd notification test)."""
    print(f"NOTIFY_SOCKET={os.environ.get('NOTIFY_SOCKET')!r}", flush=True)
    run_job(payload)


def work_with_start(payload: dict[str, Any]) -> None:
    """`work`, with a line in $E2E_STARTS when the job starts: the autoscaling tests check
    that every job that started also finished (no busy worker was stopped)."""
    import json

    import qsupervisor

    job = qsupervisor.current_job()
    line = json.dumps({"id": job.message_id if job else None, "pid": os.getpid()}) + "\n"
    fd = os.open(os.environ["E2E_STARTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    run_job(payload)
