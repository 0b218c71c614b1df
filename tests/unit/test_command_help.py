"""Every control command has its one-line help, from one place, and the control tool
offers exactly the daemon's commands."""

from __future__ import annotations

import argparse

from qsupervisor.control.help import COMMAND_HELP
from qsupervisor.ctl import broker_parsers
from qsupervisor.ctl.main import build_parser
from qsupervisor.master.commands import COMMANDS


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_help_names_exactly_the_daemons_commands() -> None:
    assert set(COMMAND_HELP) == set(COMMANDS)


def test_qsupervisorctl_offers_each_daemon_command_with_its_help() -> None:
    sub = _subcommands(build_parser())
    shown = {choice.dest: choice.help for choice in sub._choices_actions}
    daemon_commands = {name: text for name, text in shown.items()
                       if name not in broker_parsers.COMMANDS}
    assert daemon_commands == COMMAND_HELP
