"""`update` (and SIGHUP): what applying an edited configuration file changes.

Only what changed is touched: programs are added, removed, rolled (settings changed: a
new leader, then a rolling reload) or scaled (only `workers` changed). Daemon settings
that can change in place do; the others are reported as waiting for a restart.

`plan_update` is pure: from the running configuration, the new one and the programs named,
it says what to do. The master carries the plan out itself (`Master.update`), so only the
master assigns its own state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from qsupervisor.config import Config, ConfigDiff, DaemonConfig, ProgramConfig, diff_configs

# Cannot change under a running master: its socket, pidfile and own log are open already,
# and so is the metrics listener (bound before the daemon detaches, so that a port in use
# is reported to whoever started it).
RESTART_ONLY = ("socket", "pidfile", "logfile", "log_format", "metrics")
# Used when a program's output file is opened: programs added from now on get the new value.
NEW_PROGRAMS_ONLY = ("log_dir", "log_max_size", "log_backups")


class UnknownPrograms(ValueError):
    pass


@dataclass(frozen=True)
class UpdateResult:
    diff: ConfigDiff
    touched: tuple[str, ...]  # programs added, removed, changed or scaled
    changes: tuple[str, ...]  # human lines, as `reread` shows them
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class UpdatePlan:
    """What an update does, in the order the master does it."""

    config: Config  # what the master runs once the plan is applied
    daemon: DaemonConfig | None  # daemon settings to apply; None: they stay (update NAME)
    removed: tuple[str, ...]
    added: tuple[str, ...]
    changed: tuple[str, ...]  # new settings: a new leader, then a rolling reload
    scaled: tuple[str, ...]  # only `workers` changed
    result: UpdateResult


def plan_update(old: Config, new: Config, names: list[str] | None) -> UpdatePlan:
    """`names` None (or containing "all") is a full update; raises UnknownPrograms for a
    name in neither configuration."""
    if names is not None and "all" in names:
        names = None
    if names is not None:
        unknown = [n for n in names if n not in old.programs and n not in new.programs]
        if unknown:
            raise UnknownPrograms(f"no such program in the running or the new configuration: "
                                  f"{', '.join(unknown)}")
    # `update NAME` leaves the daemon section alone, so the named programs are compared
    # (and rolled) with the daemon settings they will actually get: the current ones.
    diff = diff_configs(old, new if names is None else dataclasses.replace(new, daemon=old.daemon))

    def selected(group: tuple[str, ...]) -> tuple[str, ...]:
        return group if names is None else tuple(n for n in group if n in names)

    removed, added = selected(diff.removed), selected(diff.added)
    changed, scaled = selected(diff.changed), selected(diff.scaled)
    touched = (*added, *removed, *changed, *scaled)
    changes = tuple(line for line in diff.describe()
                    if line.split(":", 1)[0] in touched
                    or (names is None and line.startswith("qsupervisord:")))
    # Daemon settings come with a full update only.
    warnings = tuple(daemon_setting_warnings(old.daemon, new.daemon)) if names is None else ()
    warnings += tuple(warning for name in changed
                      for warning in queue_setting_warnings(old.programs[name],
                                                            new.programs[name]))
    return UpdatePlan(config=_merge(old, new, names),
                      daemon=new.daemon if names is None else None,
                      removed=removed, added=added, changed=changed, scaled=scaled,
                      result=UpdateResult(diff, touched, changes, warnings))


def daemon_setting_warnings(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """The changed daemon settings that cannot take effect in place."""
    warnings = []
    restart = [key for key in RESTART_ONLY if getattr(old, key) != getattr(new, key)]
    if restart:
        warnings.append(f"{', '.join(restart)}: takes effect when qsupervisord restarts")
    later = [key for key in NEW_PROGRAMS_ONLY if getattr(old, key) != getattr(new, key)]
    if later:
        warnings.append(f"{', '.join(later)}: applies to programs added from now on; "
                        "running programs keep their output files until qsupervisord restarts")
    return warnings


def queue_setting_warnings(old: ProgramConfig, new: ProgramConfig) -> list[str]:
    """What a changed queue_arguments or bindings will and will not do to the broker."""
    warnings = []
    if old.queue == new.queue and old.queue_arguments != new.queue_arguments:
        # The new leader declares the queue with the new arguments; RabbitMQ refuses that
        # for an existing queue, and a refused new leader leaves the running one (and its
        # workers) in place, with the conflict in `status`.
        warnings.append(f"{new.name}: queue_arguments changed; RabbitMQ cannot change the "
                        f"arguments of existing queue '{new.queue}', so its declaration will be "
                        "refused and the running workers keep running with the old settings "
                        "(status shows the conflict) unless the queue is deleted first, after "
                        "moving its messages")
    if old.queue == new.queue:
        for binding in old.bindings:
            if binding not in new.bindings and not any(
                    b.exchange == binding.exchange and b.routing_key == binding.routing_key
                    for b in new.bindings):
                warnings.append(f"{new.name}: binding of queue '{new.queue}' to {binding} is "
                                "no longer configured but stays on the broker (its producers may "
                                "declare it too); remove it with rabbitmqadmin delete binding or "
                                "the management UI if it must go")
    return warnings


def _merge(old: Config, new: Config, names: list[str] | None) -> Config:
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
    # No texts: no set of files says what now runs, so a re-exec refuses until a full
    # update (master/reexec.py).
    return Config(path=old.path, daemon=old.daemon, programs=programs)
