"""Reading the main file and its includes into a validated Config.

Everything is checked and every problem collected before ConfigError is raised, so a
user fixes a file in one round instead of one error per restart.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Mapping
from typing import Any

from . import rules, schema
from .fields import FieldInput, describe, did_you_mean, resolve_path
from .model import Config, DaemonConfig, ProgramConfig
from .problems import ConfigError, KeyPath, Problem
from .yamlnodes import YamlDocument, parse_yaml

MAIN_KEYS = ("qsupervisord", "programs")
INCLUDE_KEYS = ("programs",)


def load_config(path: str, *, check_writable: bool = True,
                texts: Mapping[str, str] | None = None) -> Config:
    """Load and validate `path` (and its includes); raise ConfigError listing every problem.

    `check_writable=False` skips the checks that the daemon's own files (socket, pidfile,
    logs) can be created: a tool that only reads the settings, run by an operator who may
    not write the daemon's directories, needs the rest of the validation only.
    `texts` (absolute path -> text, as Config.texts holds them) are read instead of the
    files: a re-exec parses the configuration that was applied, not what is on disk now.
    """
    return _Loader(path, check_writable, texts).load()


class _Loader:
    def __init__(self, path: str, check_writable: bool = True,
                 texts: Mapping[str, str] | None = None) -> None:
        self.check_writable = check_writable
        self.given = texts
        self.texts: dict[str, str] = {}
        self.display = path  # as the user gave it: problems show this, not the absolute path
        self.path = os.path.abspath(path)
        self.problems: list[Problem] = []
        self.file_order: dict[str, int] = {}
        self.programs: dict[str, ProgramConfig] = {}
        self.defined_at: dict[str, str] = {}  # program name -> "file:line"
        # Programs' timeouts are checked against it; None when it failed to parse.
        self.consumer_timeout: float | None = DaemonConfig().consumer_timeout

    def load(self) -> Config:
        doc = self._read(self.path, self.display)
        if doc is None:
            raise ConfigError(self.problems)
        top = self._top_level(doc, MAIN_KEYS, "(expected 'qsupervisord' or 'programs')")
        self._require_programs(doc)
        base_dir = os.path.dirname(self.path)
        daemon_values = self._daemon(doc, top.get("qsupervisord"), base_dir)
        self._programs(doc, top.get("programs"), base_dir)
        for display, absolute in self._include_files(doc, daemon_values.get("include", ())):
            self._load_include(absolute, display)
        if self.problems:
            raise ConfigError(self._sorted_problems())
        return Config(path=self.path, daemon=DaemonConfig(**daemon_values), programs=self.programs,
                      texts=self.texts)

    # -- files ---------------------------------------------------------------------

    def _read(self, absolute: str, display: str) -> YamlDocument | None:
        self.file_order.setdefault(display, len(self.file_order))
        if self.given is not None:
            if absolute not in self.given:
                self.problems.append(Problem(display, None, "", "not in the handed-over texts"))
                return None
            text = self.given[absolute]
        else:
            try:
                with open(absolute, "rb") as stream:
                    data = stream.read()
            except OSError as exc:
                self.problems.append(Problem(display, None, "",
                                             f"cannot read the file: {exc.strerror}"))
                return None
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                line = data[: exc.start].count(b"\n") + 1
                self.problems.append(Problem(display, line, "", "the file is not valid UTF-8"))
                return None
        self.texts[absolute] = text
        doc, problems = parse_yaml(text, display)
        self.problems.extend(problems)
        return doc

    def _top_level(self, doc: YamlDocument, allowed: tuple[str, ...], hint: str) -> dict[str, Any]:
        if doc.value is None or () in doc.broken:  # reported by _require_programs, or already
            return {}
        if not isinstance(doc.value, dict):
            keys = ", ".join(repr(key) for key in allowed)
            self._problem(doc, (), f"expected a mapping with the keys {keys}, got {describe(doc.value)}")
            return {}
        for key in doc.value:
            if key not in allowed:
                self._problem(doc, (key,), "unknown key" + (did_you_mean(key, allowed) or f" {hint}"))
        return doc.value

    def _require_programs(self, doc: YamlDocument, include: bool = False) -> None:
        """A file must say which programs it holds (the main file may leave that to its
        includes). An empty one (or one of comments only, or without `programs`) is far
        more often a truncated deploy than a wish to stop everything; applied, it would
        stop every program. `programs: {}` says "none"."""
        hint = "write 'programs: {}' for no programs"
        if () in doc.broken:
            return  # reported already
        if doc.value is None:
            self.problems.append(Problem(doc.file, None, "", "the file is empty (or holds only "
                                         f"comments): a truncated file? {hint}"))
        elif isinstance(doc.value, dict) and "programs" not in doc.value:
            daemon = doc.value.get("qsupervisord")
            includes = not include and isinstance(daemon, dict) and bool(daemon.get("include"))
            unknown = set(doc.value) - set(INCLUDE_KEYS if include else MAIN_KEYS)  # reported already, and the likelier cause
            if not includes and not unknown:
                self._problem(doc, (), f"no 'programs' key: {hint}")
        elif (isinstance(doc.value, dict) and doc.value["programs"] is None
              and ("programs",) not in doc.broken):
            self._problem(doc, ("programs",), f"'programs' has no value: {hint}")

    def _include_files(self, doc: YamlDocument, patterns: tuple[str, ...]) -> list[tuple[str, str]]:
        """(display path, absolute path) of included files, in order, each file once."""
        base_dir = os.path.dirname(self.path)
        seen = {os.path.realpath(self.path)}  # "*.yaml" next to the main file matches it too
        files: list[tuple[str, str]] = []
        for index, pattern in enumerate(patterns):
            absolute_pattern = resolve_path(pattern, base_dir)
            if self.given is not None:  # the files that were included then, not now
                matches = sorted(p for p in self.given if p != self.path and (
                    fnmatch.fnmatchcase(p, absolute_pattern) if glob.has_magic(pattern)
                    else p == absolute_pattern))
            elif glob.has_magic(pattern):
                matches = sorted(m for m in glob.glob(absolute_pattern) if os.path.isfile(m))
            elif os.path.isfile(absolute_pattern):
                matches = [absolute_pattern]
            else:
                # A glob matching nothing is an empty conf.d; a plain name must exist.
                what = "is not a file" if os.path.exists(absolute_pattern) else "does not exist"
                self._problem(doc, ("qsupervisord", "include", index),
                              f"included file {absolute_pattern} {what}")
                continue
            for match in matches:
                real = os.path.realpath(match)
                if real not in seen:
                    seen.add(real)
                    files.append((self._include_display(pattern, match), match))
        return files

    def _include_display(self, pattern: str, match: str) -> str:
        """Name an included file relative to where the user stands, like the main file."""
        if os.path.isabs(os.path.expanduser(pattern)):
            return match
        relative = os.path.relpath(match, os.path.dirname(self.path))
        return os.path.join(os.path.dirname(self.display), relative)

    def _load_include(self, absolute: str, display: str) -> None:
        doc = self._read(absolute, display)
        if doc is None:
            return
        top = self._top_level(doc, INCLUDE_KEYS, "(an included file may only hold 'programs')")
        self._require_programs(doc, include=True)
        self._programs(doc, top.get("programs"), os.path.dirname(absolute))

    # -- sections ------------------------------------------------------------------

    def _daemon(self, doc: YamlDocument, value: Any, base_dir: str) -> dict[str, Any]:
        path: KeyPath = ("qsupervisord",)
        if path in doc.broken:  # already reported; what the user meant is unknown
            self.consumer_timeout = None
            return {}
        if value is None:  # everything commented out
            return {}
        if not isinstance(value, dict):
            self.consumer_timeout = None
            self._problem(doc, path, f"expected a mapping of settings, got {describe(value)}")
            return {}
        values, errors = schema.parse_section(FieldInput(value, path, doc, base_dir, self.check_writable), schema.DAEMON)
        for at, message in errors:
            self._problem(doc, path + at, message)
        if "consumer_timeout" in value:
            self.consumer_timeout = values.get("consumer_timeout")
        return values

    def _programs(self, doc: YamlDocument, value: Any, base_dir: str) -> None:
        if value is None or ("programs",) in doc.broken:
            return
        if not isinstance(value, dict):
            message = f"expected a mapping of program names to settings, got {describe(value)}"
            self._problem(doc, ("programs",), message)
            return
        for name, settings in value.items():
            self._program(doc, name, settings, base_dir)

    def _program(self, doc: YamlDocument, name: str, settings: Any, base_dir: str) -> None:
        path: KeyPath = ("programs", name)
        source = f"{doc.file}:{doc.line(path)}"
        ok = True
        if not schema.PROGRAM_NAME.fullmatch(name):
            ok = False
            self._problem(doc, path, f"invalid program name {name!r}: use letters, digits, "
                                     "'_', '.' and '-', starting with a letter or digit")
        if name in self.defined_at:
            ok = False
            self._problem(doc, path, f"program {name!r} is already defined at {self.defined_at[name]}")
        else:
            self.defined_at[name] = source
        if path in doc.broken:
            return
        if settings is None:
            settings = {}  # so the user hears about the missing handler, not about null
        if not isinstance(settings, dict):
            self._problem(doc, path, f"expected a mapping of settings, got {describe(settings)}")
            return
        values, errors = schema.parse_section(FieldInput(settings, path, doc, base_dir, self.check_writable),
                                              schema.PROGRAM)
        errors += rules.program_problems(name, values, settings.keys(), self.consumer_timeout)
        for at, message in errors:
            self._problem(doc, path + at, message)
        if ok and not errors:
            values = rules.with_derived_names(values, name)
            self.programs[name] = ProgramConfig(name=name, source=source, **values)

    # -- problems ------------------------------------------------------------------

    def _problem(self, doc: YamlDocument, path: KeyPath, message: str) -> None:
        self.problems.append(doc.problem(path, message))

    def _sorted_problems(self) -> list[Problem]:
        # Document order within each file, files in the order they were read.
        def key(problem: Problem) -> tuple[int, int]:
            return self.file_order.get(problem.file, len(self.file_order)), problem.line or 0

        return sorted(self.problems, key=key)
