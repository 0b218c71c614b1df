"""Bash completion for qsupervisorctl offers the commands and options the installed
qsupervisorctl really has, and the program names the running daemon reports."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qsupervisor.ctl import main as ctl_main

COMPLETION = Path(__file__).resolve().parents[2] / "packaging" / "qsupervisorctl.bash-completion"
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
PROGRAMS = ["orders", "emails"]


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    """A qsupervisorctl that is the real one, except that `status` answers from a fake
    daemon running two programs."""
    script = tmp_path / "qsupervisorctl"
    status = json.dumps({"master": {}, "programs": {name: {} for name in PROGRAMS}})
    script.write_text(
        "#!/bin/sh\n"
        'for arg; do [ "$arg" = status ] && { echo ' + shlex.quote(status) + "; exit 0; }; done\n"
        f'exec {shlex.quote(sys.executable)} -m qsupervisor.ctl.main "$@"\n')
    script.chmod(0o755)
    return script


def bash(script: str) -> list[str]:
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return run.stdout.split()


def complete(ctl: Path, line: str) -> list[str]:
    """What pressing TAB at the end of `line` offers."""
    if not BASH_COMPLETION.exists():
        pytest.skip("bash-completion is not installed (apt-get install bash-completion)")
    words = line.split(" ")
    words[0] = str(ctl)
    return sorted(bash(
        f"source {BASH_COMPLETION}; source {COMPLETION}; "
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(' '.join(words))}; "
        f"COMP_POINT=${{#COMP_LINE}}; _qsupervisorctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""))


def commands() -> list[str]:
    for action in ctl_main.build_parser()._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            return sorted(action.choices)
    raise AssertionError("qsupervisorctl has no subcommands")


def test_the_commands_offered_are_the_parsers_commands(ctl: Path) -> None:
    offered = bash(f"source {COMPLETION}; _qsupervisorctl_commands {shlex.quote(str(ctl))}")
    assert sorted(offered) == commands()


def test_a_commands_options_are_offered(ctl: Path) -> None:
    offered = bash(f"source {COMPLETION}; _qsupervisorctl_options {shlex.quote(str(ctl))} tail")
    assert {"-f", "--follow", "-n", "--lines"} <= set(offered)


def test_tab_after_the_program_name_offers_commands(ctl: Path) -> None:
    assert complete(ctl, "qsupervisorctl re") == sorted(
        c for c in commands() if c.startswith("re"))


def test_tab_after_a_command_offers_the_daemons_programs(ctl: Path) -> None:
    assert complete(ctl, "qsupervisorctl -c /etc/qsupervisor/queues.yaml status ") == PROGRAMS[::-1]
    assert complete(ctl, "qsupervisorctl reload o") == ["orders"]
    assert complete(ctl, "qsupervisorctl stop ") == sorted(PROGRAMS + ["all"])


def test_no_program_is_offered_where_none_is_taken(ctl: Path) -> None:
    # After the program: a count (nothing to offer) or --auto, never a program.
    assert complete(ctl, "qsupervisorctl scale orders ") == ["--auto"]
    assert "--auto" in complete(ctl, "qsupervisorctl scale orders --")
    assert complete(ctl, "qsupervisorctl shutdown ") == []
    assert "HUP" in complete(ctl, "qsupervisorctl signal orders ")


def test_fleet_offers_its_option_and_program_names_after_it(ctl: Path) -> None:
    assert "--program" in complete(ctl, "qsupervisorctl fleet --")
    assert complete(ctl, "qsupervisorctl fleet --program e") == ["emails"]
    assert complete(ctl, "qsupervisorctl fleet ") == []


def test_only_real_options_are_offered_not_those_named_in_help_texts(ctl: Path) -> None:
    # reexec's --all help mentions --preload, scale's summary mentions --auto.
    assert complete(ctl, "qsupervisorctl reexec --") == ["--all", "--help", "--json"]
    assert "--auto" not in complete(ctl, "qsupervisorctl --")


def test_reexec_takes_no_program(ctl: Path) -> None:
    assert complete(ctl, "qsupervisorctl reexec ") == []
    assert complete(ctl, "qsupervisorctl reexec --all ") == []
