"""Configuration: the YAML file format, its validation, and reload diffs.

Import from here; the submodules are an implementation detail.
"""

from __future__ import annotations

from .diff import ConfigDiff, diff_configs
from .loader import load_config, read_control_settings
from .model import DEFAULT_CONFIG_PATH, Backoff, Config, DaemonConfig, DelayConfig, ProgramConfig
from .problems import ConfigError, Problem

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Backoff",
    "Config",
    "ConfigDiff",
    "ConfigError",
    "DaemonConfig",
    "DelayConfig",
    "Problem",
    "ProgramConfig",
    "diff_configs",
    "load_config",
    "read_control_settings",
]
