"""Handlers of the fault suite. Each job appends JSON lines to $FAULT_LEDGER with one
O_APPEND write each (well under PIPE_BUF, so concurrent workers never interleave):

- `work`: one line per run that reached its end (`event: "run"`, written last, just
  before the message is acknowledged); the flow scenarios count these.
- `poison`: a line when the run starts (`event: "start"`, with `alive`: the pids of
  earlier runs of the same message that were still running at that moment) and, when the
  run ends by returning or raising, one when it ends (`event: "end"`); then it misbehaves
  as `payload["mode"]` says: `raise`, `exit0` (os._exit(0)), `abort` (os.abort()),
  `segfault` (reads address 0), `gil` (a C call holding the GIL for `payload["hold"]`
  seconds, so the connection's heartbeats stop and the broker takes the message back
  while the run goes on; then returns), `ok` (returns).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import time
from typing import Any

import qsupervisor


def _append(entry: dict[str, Any]) -> None:
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(os.environ["FAULT_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _record(event: str, **extra: Any) -> None:
    job = qsupervisor.current_job()
    _append({"id": job.message_id if job else None, "attempt": job.attempt if job else None,
             "redelivered": job.redelivered if job else None, "pid": os.getpid(),
             "event": event, "t": time.time(), **extra})


def work(payload: Any) -> None:
    """The flow scenarios' job: optionally take a little time, then record the run (a
    worker killed before this line never handled the message: it will be redelivered)."""
    spec = payload if isinstance(payload, dict) else {}
    if spec.get("sleep"):
        time.sleep(float(spec["sleep"]))
    _record("run", due=_due_at())


def _due_at() -> Any:
    """The x-qsupervisor-due-at header (ms since the epoch) of a delayed message, or None."""
    job = qsupervisor.current_job()
    return job.headers.get("x-qsupervisor-due-at") if job else None


def _earlier_runs_alive(msg_id: str | None) -> list[int]:
    """Pids of earlier runs of this message that are still in progress: started in another
    process, not ended, and that process still running (a zombie or a vanished pid has
    stopped, whoever reaps it)."""
    try:
        with open(os.environ["FAULT_LEDGER"]) as f:
            entries = [json.loads(line) for line in f if line.endswith("}\n")]
    except FileNotFoundError:
        return []
    mine = [e for e in entries if e["id"] == msg_id]
    ended = {(e["pid"], e["attempt"]) for e in mine if e["event"] == "end"}
    return sorted({e["pid"] for e in mine
                   if e["event"] == "start" and e["pid"] != os.getpid()
                   and (e["pid"], e["attempt"]) not in ended and _running(e["pid"])})


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _hold_gil(seconds: float) -> None:
    """One C call that keeps the GIL for `seconds`: libc's sleep() called through
    ctypes.PyDLL, which (unlike CDLL) does not release the GIL, so no other thread (pika's
    I/O thread with its heartbeats included) runs meanwhile. The effect of a long
    sum(range(N)), with an exact duration: calibrated sums ran 4.4 to 5.3 s for 6 s on this
    loaded machine, sometimes too short for the broker to drop the connection."""
    libc = ctypes.PyDLL(ctypes.util.find_library("c"))
    libc.sleep(ctypes.c_uint(max(1, round(seconds))))


def poison(payload: Any) -> None:
    spec = payload if isinstance(payload, dict) else {}
    mode = spec.get("mode", "ok")
    job = qsupervisor.current_job()
    _record("start", mode=mode, alive=_earlier_runs_alive(job.message_id if job else None))
    if mode == "raise":
        _record("end", mode=mode)
        raise RuntimeError("poison: raise")
    if mode == "exit0":
        os._exit(0)
    if mode == "abort":
        os.abort()
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "gil":
        _hold_gil(float(spec.get("hold", 6.0)))
    _record("end", mode=mode)
