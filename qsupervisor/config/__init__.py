"""Configuration: the YAML file format, its validation, and reload diffs.

Import from here; the submodules are an implementation detail. Names load on first use
(PEP 562): qsupervisorctl needs only `read_control_settings`, and must not pay for the
schema and validation rules on every call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .control import read_control_settings
    from .diff import ConfigDiff, diff_configs
    from .loader import load_config
    from .model import (
        DEFAULT_CONFIG_PATH,
        Backoff,
        Config,
        DaemonConfig,
        DelayConfig,
        FleetConfig,
        MetricsConfig,
        ProgramConfig,
    )
    from .problems import ConfigError, Problem

_WHERE = {
    "ConfigDiff": "diff", "diff_configs": "diff",
    "load_config": "loader",
    "read_control_settings": "control",
    "DEFAULT_CONFIG_PATH": "model", "Backoff": "model", "Config": "model",
    "DaemonConfig": "model", "DelayConfig": "model", "FleetConfig": "model",
    "MetricsConfig": "model", "ProgramConfig": "model",
    "ConfigError": "problems", "Problem": "problems",
}

# A literal list, so linters see the names the lazy imports above provide.
__all__ = ["DEFAULT_CONFIG_PATH", "Backoff", "Config", "ConfigDiff", "ConfigError",
           "DaemonConfig", "DelayConfig", "FleetConfig", "MetricsConfig", "Problem", "ProgramConfig", "diff_configs",
           "load_config", "read_control_settings"]
assert set(__all__) == set(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'qsupervisor.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
