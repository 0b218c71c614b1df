"""qsupervisor: a process supervisor for RabbitMQ queue workers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qsupervisor.broker.publisher import Publisher, PublishError, publish
    from qsupervisor.job import Job, current_job

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = ["Job", "current_job", "__version__", "PROTOCOL_VERSION",
           "publish", "Publisher", "PublishError"]

# Imported on first use (PEP 562): qsupervisorctl, `qsupervisord --check` and the master's
# modules import this package and must not pay for pika and the config loader unless they
# publish (tests/unit/test_tiers.py checks it).
_LAZY = {name: "qsupervisor.broker.publisher" for name in ("publish", "Publisher", "PublishError")}
_LAZY.update(Job="qsupervisor.job", current_job="qsupervisor.job")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qsupervisor' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
