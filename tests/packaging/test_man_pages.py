"""The man pages describe exactly what the code accepts: every option and command of
qsupervisord and qsupervisorctl, every configuration key, exit code and signal.

The parsers and the schema tables are introspected, so a new option or key fails here until
its page describes it, and a page that still describes a removed one fails too.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import qsupervisor
from qsupervisor.config import schema
from qsupervisor.ctl import main as ctl_main
from qsupervisor.daemon import main as daemon_main
from qsupervisor.master import arbiter

MAN = Path(__file__).resolve().parents[2] / "man"
DAEMON_PAGE = MAN / "qsupervisord.8"
CTL_PAGE = MAN / "qsupervisorctl.1"
CONFIG_PAGE = MAN / "qsupervisor.yaml.5"
PAGES = (DAEMON_PAGE, CTL_PAGE, CONFIG_PAGE)

_ESCAPES = [(r"\-", "-"), (r"\(dq", '"'), (r"\(aq", "'"), (r"\(ti", "~"), (r"\(mu", "x"),
            (r"\(bu", "*"), (r"\&", ""), (r"\c", "")]
_FONT = re.compile(r"\\f[BIRP]")


# -- reading roff ------------------------------------------------------------------------


def plain(roff: str) -> str:
    """The text of roff source: escapes resolved, font changes and comments dropped, the
    macro names removed so that `.BR \\-\\-wait ,` reads `--wait ,`."""
    lines = []
    for line in roff.splitlines():
        if line.startswith('.\\"'):
            continue
        if line.startswith("."):
            line = line.split(" ", 1)[1] if " " in line else ""
        for escape, text in _ESCAPES:
            line = line.replace(escape, text)
        lines.append(_FONT.sub("", line).replace('"', " "))
    return "\n".join(lines)


def sections(roff: str, macro: str) -> dict[str, str]:
    """Plain text of each .SH (or .SS) part, keyed by its heading in plain text."""
    parts: dict[str, list[str]] = {}
    current = ""
    for line in roff.splitlines():
        if line.startswith(macro + " "):
            current = plain(line).strip()
            parts.setdefault(current, [])
        elif line.startswith(".SH ") and macro != ".SH":
            current = ""  # a .SS part ends at the next .SH
        else:
            parts.setdefault(current, []).append(line)
    return {name: plain("\n".join(body)) for name, body in parts.items()}


def tagged_names(roff_part: str) -> list[str]:
    """The first word of each .TP tag (the line after .TP), as written."""
    lines = roff_part.splitlines()
    return [plain(lines[i + 1]).split()[0] for i, line in enumerate(lines[:-1])
            if line.strip() == ".TP" and plain(lines[i + 1]).split()]


def mentions(text: str, word: str) -> bool:
    """`word` as a whole token: --wait is not found in --no-wait, nor -n in -nodaemon."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def section_of(page: Path, heading: str) -> str:
    found = sections(read(page), ".SH")
    assert heading in found, f"{page.name} has no section {heading!r}"
    return found[heading]


def raw_section(page: Path, heading: str) -> str:
    """The roff source of one .SH section."""
    roff = read(page)
    start = roff.index(f'.SH "{heading}"' if " " in heading else f".SH {heading}")
    end = roff.find("\n.SH ", start + 1)
    return roff[start:end if end != -1 else len(roff)]


# -- parsers ------------------------------------------------------------------------------


def options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        yield from action.option_strings


def positionals(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            yield str(action.metavar or action.dest.upper())


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_sections() -> dict[str, str]:
    """qsupervisorctl.1's COMMANDS: command name -> plain text of its .SS part."""
    commands_roff = raw_section(CTL_PAGE, "COMMANDS")
    parts = sections(commands_roff, ".SS")
    by_name: dict[str, str] = {}
    for heading, text in parts.items():
        if heading:
            by_name[heading.split()[0]] = heading + "\n" + text
    return by_name


# -- qsupervisord(8) ------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(set(options(daemon_main.build_parser()))))
def test_every_daemon_option_is_described(option: str) -> None:
    assert mentions(section_of(DAEMON_PAGE, "OPTIONS"), option), \
        f"qsupervisord.8 OPTIONS does not describe {option}"


def test_daemon_exit_codes_are_described() -> None:
    codes = {daemon_main.EXIT_OK, daemon_main.EXIT_FAILED, daemon_main.EXIT_CONFIG}
    described = set(tagged_names(raw_section(DAEMON_PAGE, "EXIT STATUS")))
    assert described == {str(code) for code in codes}


def test_daemon_signals_are_described() -> None:
    text = section_of(DAEMON_PAGE, "SIGNALS")
    for sig in arbiter.SIGNAL_NAMES:
        assert mentions(text, sig.name), f"qsupervisord.8 SIGNALS does not describe {sig.name}"


# -- qsupervisorctl(1) ----------------------------------------------------------------------


def test_every_global_ctl_option_is_described() -> None:
    text = section_of(CTL_PAGE, "OPTIONS")
    missing = [o for o in options(ctl_main.build_parser()) if not mentions(text, o)]
    assert not missing, f"qsupervisorctl.1 OPTIONS does not describe {missing}"


def test_ctl_commands_match_the_page() -> None:
    in_code = set(subcommands(ctl_main.build_parser()))
    in_page = set(command_sections())
    assert in_code - in_page == set(), f"commands missing from qsupervisorctl.1: {in_code - in_page}"
    assert in_page - in_code == set(), f"qsupervisorctl.1 describes unknown commands: {in_page - in_code}"


def _command_params() -> list[tuple[str, str]]:
    params = []
    for name, parser in subcommands(ctl_main.build_parser()).items():
        params += [(name, o) for o in options(parser) if o not in ("-h", "--help")]
        params += [(name, p) for p in positionals(parser)]
    return sorted(params)


@pytest.mark.parametrize("command,argument", _command_params())
def test_every_ctl_command_argument_is_described(command: str, argument: str) -> None:
    # Options shared by every command may be described once, before the first command.
    common = sections(raw_section(CTL_PAGE, "COMMANDS"), ".SS").get("", "")
    text = command_sections().get(command, "")
    assert mentions(text, argument) or (argument.startswith("-") and mentions(common, argument)), \
        f"qsupervisorctl.1 does not describe {argument} under the command {command!r}"


def test_ctl_exit_codes_are_described() -> None:
    codes = {ctl_main.EXIT_OK, ctl_main.EXIT_FAILED, ctl_main.EXIT_USAGE,
             ctl_main.EXIT_NOT_RUNNING, ctl_main.EXIT_UNREACHABLE}
    described = set(tagged_names(raw_section(CTL_PAGE, "EXIT STATUS")))
    assert described == {str(code) for code in codes}


def test_ctl_environment_is_described() -> None:
    assert mentions(section_of(CTL_PAGE, "ENVIRONMENT"), "QSUPERVISOR_CONFIG")


# -- qsupervisor.yaml(5) ------------------------------------------------------------------


def _keys(section: schema.Section) -> list[str]:
    keys = []
    for key, spec in section.keys.items():
        keys.append(key)
        if spec.section is not None:
            keys += [f"{key}.{sub}" for sub in spec.section.keys]
    return keys


CONFIG_SECTIONS = (("DAEMON SETTINGS", schema.DAEMON), ("PROGRAM SETTINGS", schema.PROGRAM))


@pytest.mark.parametrize("heading,key", [(h, k) for h, s in CONFIG_SECTIONS for k in _keys(s)])
def test_every_configuration_key_is_described(heading: str, key: str) -> None:
    described = tagged_names(raw_section(CONFIG_PAGE, heading))
    assert key in described, f"qsupervisor.yaml.5 {heading} does not describe {key!r}"


@pytest.mark.parametrize("heading,section", CONFIG_SECTIONS)
def test_no_configuration_key_is_described_that_the_code_lacks(
        heading: str, section: schema.Section) -> None:
    described = set(tagged_names(raw_section(CONFIG_PAGE, heading)))
    assert described - set(_keys(section)) == set()


# -- all pages ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_carries_the_current_version(page: Path) -> None:
    title = next(line for line in read(page).splitlines() if line.startswith(".TH "))
    assert f'"qsupervisor {qsupervisor.__version__}"' in title


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_has_the_code_freshness_table(page: Path) -> None:
    text = " ".join(section_of(page, "CODE FRESHNESS").split())
    for refresher in ("reload PROGRAM --preload", "reload PROGRAM ,", "recycle", "restart"):
        assert refresher in text, f"{page.name} CODE FRESHNESS lacks {refresher!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_is_clean_under_mandoc(page: Path) -> None:
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (apt-get install mandoc)")
    run = subprocess.run(["mandoc", "-T", "lint", str(page)], capture_output=True, text=True)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_is_clean_under_groff(page: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    run = subprocess.run(["groff", "-ww", "-z", "-man", str(page)], capture_output=True,
                         text=True)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")
