"""The handler of the second-language producer tests (tests/e2e/test_clients.py): it records
the payload, when the job started, its due time and the headers it was given, each as
[type name, value] so the test sees the Python type a header arrived as. A payload with
"fail": true raises, so its message goes through the retries into the dead-letter queue."""

from __future__ import annotations

import datetime
import decimal
import time
from typing import Any

import qsupervisor
from e2eapp import ledger

DUE_AT = "x-qsupervisor-due-at"


def typed(value: Any) -> Any:
    """[type name, a JSON value] for a header value, nested values likewise."""
    if isinstance(value, dict):
        return ["dict", {str(k): typed(v) for k, v in value.items()}]
    if isinstance(value, list):
        return ["list", [typed(v) for v in value]]
    if isinstance(value, (bytes, bytearray)):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, decimal.Decimal):
        return ["Decimal", str(value)]
    if isinstance(value, datetime.datetime):
        return ["datetime", value.isoformat()]
    return [type(value).__name__, value]


def record(payload: Any) -> None:
    started = time.time()
    job = qsupervisor.current_job()
    assert job is not None
    headers = {k: typed(v) for k, v in job.headers.items() if not k.startswith("x-")}
    spec = payload if isinstance(payload, dict) else {}
    ledger.record("clients", ok=not spec.get("fail"), t=started, due=job.headers.get(DUE_AT),
                  payload=payload, headers=headers)
    if spec.get("fail"):
        raise RuntimeError("the payload asked to fail")
