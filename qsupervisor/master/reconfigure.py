"""`update` (and SIGHUP): apply an edited configuration file to the running daemon.

Only what changed is touched: programs are added, removed, rolled (settings changed: a
new leader, then a rolling reload) or scaled (only `workers` changed). Daemon settings
that can change in place do; the others are reported as waiting for a restart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Tuple

import os

from qsupervisor import logs
from qsupervisor.config import (Config, ConfigDiff, ConfigError, DaemonConfig, diff_configs,
                                load_config)
from qsupervisor.control.server import PeerPolicy
from qsupervisor.daemon import systemd

if TYPE_CHECKING:
    from qsupervisor.master.arbiter import Master

log = logs.get("qsupervisor.master")

# Cannot change under a running master: its socket, pidfile and own log are open already.
RESTART_ONLY = ("socket", "pidfile", "logfile", "log_format")
# Used when a program's output file is opened: programs added from now on get the new value.
NEW_PROGRAMS_ONLY = ("log_dir", "log_max_size", "log_backups")


class UnknownPrograms(ValueError):
    pass


@dataclass(frozen=True)
class UpdateResult:
    diff: ConfigDiff
    touched: Tuple[str, ...]  # programs added, removed, changed or scaled
    changes: Tuple[str, ...]  # human lines, as `reread` shows them
    warnings: Tuple[str, ...] = field(default=())


def apply_update(master: "Master", names: Optional[List[str]]) -> UpdateResult:
    """Raises ConfigError (nothing changes) or UnknownPrograms."""
    systemd.notify("RELOADING=1\nSTATUS=applying the configuration")
    try:
        try:
            new = load_config(master.config.path)
        except ConfigError as exc:
            log.error("configuration not applied; the daemon runs on as it was",
                      errors=[str(problem) for problem in exc.problems])
            raise
        return _apply(master, new, None if not names or "all" in names else names)
    finally:
        systemd.notify("READY=1\nSTATUS=running")


def _apply(master: "Master", new: Config, names: Optional[List[str]]) -> UpdateResult:
    old = master.config
    if names is not None:
        unknown = [n for n in names if n not in old.programs and n not in new.programs]
        if unknown:
            raise UnknownPrograms(f"no such program in the running or the new configuration: "
                                  f"{', '.join(unknown)}")
    # `update NAME` leaves the daemon section alone, so the named programs are compared
    # (and rolled) with the daemon settings they will actually get: the current ones.
    diff = diff_configs(old, new if names is None else dataclasses.replace(new, daemon=old.daemon))
    selected = (lambda n: True) if names is None else (lambda n: n in names)
    master.config = _merge(old, new, names)
    warnings: List[str] = []
    if names is None:  # daemon settings come with a full update only
        warnings = _apply_daemon_settings(master, old.daemon, new.daemon)
        master.daemon = new.daemon
    for name in filter(selected, diff.removed):
        master.retire_program(name)
    for name in filter(selected, diff.added):
        master.add_program(name, autostart=new.programs[name].autostart)
    for name in filter(selected, diff.changed):
        master.programs[name].apply_config(new.programs[name])
    for name in filter(selected, diff.scaled):
        master.programs[name].config = new.programs[name]
        master.programs[name].scale(new.programs[name].workers)
    touched = tuple(n for n in (*diff.added, *diff.removed, *diff.changed, *diff.scaled)
                    if selected(n))
    changes = tuple(line for line in diff.describe()
                    if line.split(":", 1)[0] in touched
                    or (names is None and line.startswith("qsupervisord:")))
    log.info("configuration applied", changes=list(changes), warnings=warnings)
    master.changed()
    return UpdateResult(diff, touched, changes, tuple(warnings))


def _apply_daemon_settings(master: "Master", old: DaemonConfig, new: DaemonConfig) -> List[str]:
    if (old.allow_users, old.allow_groups) != (new.allow_users, new.allow_groups):
        master.server.policy = PeerPolicy.from_names(new.allow_users, new.allow_groups)
    if old.socket_mode != new.socket_mode:
        os.chmod(master.server.path, new.socket_mode)
    if old.log_level != new.log_level:
        logs.set_level(new.log_level)  # programs get it through their new leaders
    warnings = []
    restart = [key for key in RESTART_ONLY if getattr(old, key) != getattr(new, key)]
    if restart:
        warnings.append(f"{', '.join(restart)}: takes effect when qsupervisord restarts")
    later = [key for key in NEW_PROGRAMS_ONLY if getattr(old, key) != getattr(new, key)]
    if later:
        warnings.append(f"{', '.join(later)}: applies to programs added from now on; "
                        "running programs keep their output files until qsupervisord restarts")
    for warning in warnings:
        log.warning("setting not applied in place", detail=warning)
    return warnings


def _merge(old: Config, new: Config, names: Optional[List[str]]) -> Config:
    """`update NAME...` applies only those programs; the rest, and the daemon section,
    keep their old settings (so a later full update still sees their changes)."""
    if names is None:
        return new
    programs = dict(old.programs)
    for name in names:
        if name in new.programs:
            programs[name] = new.programs[name]
        else:
            programs.pop(name, None)
    return Config(path=old.path, daemon=old.daemon, programs=programs)
