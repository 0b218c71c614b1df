"""What a config reload changes, so the master touches only what must change.

The distinction that matters is "scaled" versus "changed": a new worker count only
starts or stops workers, while any other setting needs a rolling restart of the
program's workers (or its leader, for preload).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .model import Config, ProgramConfig

# Values never shown in reload output, which ends up in logs: the broker URL carries a
# password and environments often carry API keys.
_SECRET_FIELDS = frozenset({"broker", "environment"})
# delay: every program declares its delay levels from the resolution, and its workers
# publish retries into them, so a new resolution needs new leaders and workers.
_INHERITED_BY_PROGRAMS = ("broker", "path", "log_level", "delay")
_IGNORED_FIELDS = frozenset({"name", "source"})
_SCALING = frozenset({"workers", "workers_max", "autoscale"})


@dataclass(frozen=True)
class ConfigDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # settings other than workers changed -> rolling restart
    scaled: tuple[str, ...] = ()  # only workers changed
    daemon_changed: tuple[str, ...] = ()  # names of DaemonConfig fields that differ
    # Human text per program ("max_jobs 1000 -> 500") and for the daemon section; only
    # for describe(), so two diffs naming the same changes compare equal.
    details: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    daemon_details: str = field(default="", compare=False)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.scaled or self.daemon_changed)

    def describe(self) -> list[str]:
        """One line per affected program (and one for the daemon section)."""
        details = dict(self.details)
        lines = [f"{name}: added" for name in self.added]
        lines += [f"{name}: removed" for name in self.removed]
        for name in self.changed:
            detail = details.get(name)
            lines.append(f"{name}: changed ({detail})" if detail else f"{name}: changed")
        for name in self.scaled:
            detail = details.get(name)
            lines.append(f"{name}: scaled {detail}" if detail else f"{name}: scaled")
        if self.daemon_changed:
            lines.append(f"qsupervisord: changed ({self.daemon_details or ', '.join(self.daemon_changed)})")
        return lines


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    daemon_changed = _changed_fields(old.daemon, new.daemon)
    # Leaders and workers are forked with these settings (their broker connection, sys.path,
    # log level, delay levels), so a change to any of them rolls every program.
    inherited = [name for name in daemon_changed if name in _INHERITED_BY_PROGRAMS]
    changed: list[str] = []
    scaled: list[str] = []
    details: list[tuple[str, str]] = []
    for name, program in new.programs.items():
        previous = old.programs.get(name)
        if previous is None:
            continue
        fields_changed = _changed_fields(previous, program)
        if not fields_changed and not inherited:
            continue
        if set(fields_changed) <= _SCALING and not inherited:
            # The count, the bounds or how the autoscaler decides: applied in place.
            scaled.append(name)
            details.append((name, f"{_count(previous)} -> {_count(program)}"))
        else:
            changed.append(name)
            # Inherited settings are explained with the daemon's values: the program has none.
            explained = [_explain(previous, program, fields_changed), _explain(old.daemon, new.daemon, inherited)]
            details.append((name, ", ".join(part for part in explained if part)))
    return ConfigDiff(
        added=tuple(name for name in new.programs if name not in old.programs),
        removed=tuple(name for name in old.programs if name not in new.programs),
        changed=tuple(changed),
        scaled=tuple(scaled),
        daemon_changed=tuple(daemon_changed),
        details=tuple(details),
        daemon_details=_explain(old.daemon, new.daemon, daemon_changed),
    )


def _changed_fields(old: Any, new: Any) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(old)
        if f.name not in _IGNORED_FIELDS and getattr(old, f.name) != getattr(new, f.name)
    ]


def _explain(old: Any, new: Any, names: list[str]) -> str:
    parts = []
    for name in names:
        before, after = getattr(old, name, None), getattr(new, name, None)
        if name in _SECRET_FIELDS:
            parts.append(f"{name} changed")
        elif dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after):
            parts.append(_explain_section(name, before, after))
        elif name == "socket_mode":  # a mode reads as octal, as it is written
            parts.append(f"{name} {before:04o} -> {after:04o}")
        elif name == "queue_arguments":  # as the file writes them: {x-max-priority: 10}
            parts.append(f"{name} {_show_mapping(before or ())} -> {_show_mapping(after or ())}")
        else:
            parts.append(f"{name} {_show(before)} -> {_show(after)}")
    return ", ".join(parts)


def _explain_section(name: str, old: Any, new: Any) -> str:
    """A nested section (backoff, delay), as its changed sub-keys: 'backoff.factor 2 -> 3'."""
    return ", ".join(
        f"{name}.{key} {_show(getattr(old, key))} -> {_show(getattr(new, key))}"
        for key in _changed_fields(old, new)
    )


def _show_mapping(pairs: tuple[tuple[str, Any], ...]) -> str:
    return "{" + ", ".join(f"{key}: {_show(value)}" for key, value in pairs) + "}"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return str(value)


def _count(program: ProgramConfig) -> str:
    """A program's workers as `reread` shows them: 4, or 1..6 (auto, target_wait 10s)."""
    if program.workers_max is None:
        return str(program.workers)
    return (f"{program.workers}..{program.workers_max} (auto, target_wait "
            f"{program.autoscale.target_wait:g}s)")
