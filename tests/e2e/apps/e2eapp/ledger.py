"""The ledger: one JSON line per job, appended by the worker that ran it.

The file comes from $E2E_LEDGER (set in the program's `environment:`), so each test
reads only its own jobs. Each record is written with one O_APPEND write of well under
PIPE_BUF bytes, so lines from concurrent workers never interleave.
"""

from __future__ import annotations

import json
import os
from typing import Any

import qsupervisor


def record(version: str, ok: bool = True, **extra: Any) -> None:
    job = qsupervisor.current_job()
    entry: dict[str, Any] = {
        "id": job.message_id if job else None,
        "attempt": job.attempt if job else None,
        "redelivered": job.redelivered if job else None,
        "pid": os.getpid(),
        "version": version,
        "ok": ok,
        **extra,
    }
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(os.environ["E2E_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
