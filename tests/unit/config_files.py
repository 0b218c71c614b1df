"""Writing small configuration files for the config tests, and reading their problems;
building configurations in memory."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from qsupervisor.config import (
    Config,
    ConfigError,
    DaemonConfig,
    ProgramConfig,
    load_config,
)


def write(path: Path, text: str) -> str:
    """Write dedented YAML whose first line is line 1; return the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def problems(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(problem) for problem in info.value.problems]


def program_file(tmp_path: Path, extra: str) -> str:
    """A file whose program 'orders' has `extra` (one 'key: value' line) on line 4."""
    return write(tmp_path / "queues.yaml", f"""
        programs:
          orders:
            handler: app.jobs:handle
            {extra}
        """)


def daemon_file(tmp_path: Path, extra: str) -> str:
    """A file whose qsupervisord section has `extra` on line 2 (and no programs)."""
    return write(tmp_path / "queues.yaml", f"""
        qsupervisord:
          {extra}
        programs: {{}}
        """)


def program(name: str, **settings: Any) -> ProgramConfig:
    """A program's settings as the loader would make them, queue named after it."""
    settings.setdefault("handler", "app.jobs:handle")
    settings.setdefault("queue", name)
    return ProgramConfig(name=name, **settings)


def config(*programs: ProgramConfig, **daemon: Any) -> Config:
    """A whole configuration of these programs, the daemon section made of `daemon`."""
    by_name: dict[str, ProgramConfig] = {p.name: p for p in programs}
    return Config(path="/etc/qsupervisor/queues.yaml", daemon=DaemonConfig(**daemon),
                  programs=by_name)
