"""Writing small configuration files for the config tests, and reading their problems."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import List

import pytest

from qsupervisor.config import ConfigError, load_config


def write(path: Path, text: str) -> str:
    """Write dedented YAML whose first line is line 1; return the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def problems(path: str) -> List[str]:
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
    """A file whose qsupervisord section has `extra` on line 2."""
    return write(tmp_path / "queues.yaml", f"""
        qsupervisord:
          {extra}
        """)
