"""The loaded configuration: immutable values the daemon and the control tool share.

Everything here is already validated and normalised (absolute paths, seconds, bytes),
so code that receives a Config never re-checks or re-parses anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Optional

DEFAULT_CONFIG_PATH = "/etc/qsupervisor/queues.yaml"


@dataclass(frozen=True)
class DaemonConfig:
    broker: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    socket: str = "/run/qsupervisor/qsupervisord.sock"  # absolute after loading
    socket_mode: int = 0o600
    allow_users: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()
    pidfile: str = "/run/qsupervisor/qsupervisord.pid"  # absolute after loading
    logfile: str = "/var/log/qsupervisor/qsupervisord.log"  # "-" means stderr; else absolute
    log_dir: str = "/var/log/qsupervisor"  # absolute
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"  # debug | info | warning | error
    log_max_size: int = 50 * 1024 * 1024  # bytes; rotation size of captured worker output
    log_backups: int = 5
    path: tuple[str, ...] = ()  # absolute dirs
    include: tuple[str, ...] = ()  # the globs as written


@dataclass(frozen=True)
class ProgramConfig:
    name: str
    handler: str  # "module:callable"; module dotted, callable may be a dotted attribute path
    queue: str  # defaults to name
    workers: int = 1  # >= 0
    preload: tuple[str, ...] = ()  # dotted module names
    max_jobs: int = 0  # >= 0, 0 = never recycle
    max_jobs_jitter: int = 0  # >= 0
    prefetch: int = 1  # 1..65535
    stop_timeout: float = 30.0  # seconds, > 0
    start_retries: int = 5  # >= 1: consecutive failures to reach RUNNING before FATAL
    autostart: bool = True
    environment: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    directory: Optional[str] = None  # absolute; exists
    user: Optional[str] = None  # exists (pwd)
    group: Optional[str] = None  # exists (grp)
    # Where the program was defined ("file:line"). Not compared: moving a program to
    # another include file is not a change that should restart its workers.
    source: str = field(default="", compare=False)

    def settings_without_workers(self) -> ProgramConfig:
        """A copy with workers=0, so 'only the worker count changed' is one comparison."""
        return dataclasses.replace(self, workers=0)


@dataclass(frozen=True)
class Config:
    path: str  # absolute path of the main file
    daemon: DaemonConfig
    programs: Mapping[str, ProgramConfig]  # in definition order (main file, then includes)
