"""The loaded configuration: immutable values the daemon and the control tool share.

Everything here is already validated and normalised (absolute paths, seconds, bytes),
so code that receives a Config never re-checks or re-parses anything.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from socket import gethostname
from typing import Callable, Union

from .defaults import DEFAULT_BROKER, DEFAULT_CONFIG_PATH, DEFAULT_SOCKET  # noqa: F401 - DEFAULT_CONFIG_PATH re-exported

# The longest delay the delay-level chain must hold: a year, plus a leap day, so that
# "remind me in a year" always fits whatever the date.
DELAY_HORIZON = 366 * 86400.0


@dataclass(frozen=True)
class Backoff:
    """How long a failed job waits before its next try: exponential, capped, jittered."""

    initial: float = 1.0  # seconds, > 0
    factor: float = 2.0  # >= 1
    max: float = 3600.0  # seconds, >= initial
    jitter: float = 0.2  # 0..1, the fraction by which each delay may vary either way

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number `attempt` (1 = first retry): initial*factor**(attempt-1),
        capped at max, jittered; never above max. `rand` returns a float in [0, 1)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        try:
            base = min(self.initial * self.factor ** (attempt - 1), self.max)
        except OverflowError:  # factor**attempt beyond a float: far past any cap
            base = self.max
        # Jitter spreads retries of messages that failed together (a broker or database
        # outage) so that they do not all come back in the same instant.
        jittered = base * (1.0 + self.jitter * (2.0 * rand() - 1.0))
        return min(jittered, self.max)


@dataclass(frozen=True)
class DelayConfig:
    """The delay-level chain shared by every program: level k holds a message 2**k ticks."""

    resolution: float = 0.1  # seconds per tick, 0.01..60: delays round up to a tick

    @property
    def levels(self) -> int:
        """Number of levels, so that (2**levels - 1) ticks reach DELAY_HORIZON."""
        # round() first: 366 days / 0.3 s is 105408000.00000001 in floating point.
        ticks = math.ceil(round(DELAY_HORIZON / self.resolution, 6))
        # (2**n - 1) >= ticks  <=>  2**n > ticks  <=>  n >= ticks.bit_length()
        return ticks.bit_length()

    @property
    def max_delay(self) -> float:
        """The longest delay the chain can hold, in seconds."""
        return (2**self.levels - 1) * self.resolution


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint the master serves; off while `listen` is empty."""

    # "host:port" as the loader normalises it: "127.0.0.1:9808", "[::1]:9808"
    listen: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def host(self) -> str:
        """The address to bind, without an IPv6 literal's brackets."""
        host = self.listen.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class FleetConfig:
    """The fleet view: how often the daemon announces itself on the broker."""

    # Others mark a daemon stale after 3 of its intervals unheard, and drop it after 10
    # (herald/table.py); each announcement carries its own interval for that reason.
    interval: float = 5.0  # seconds, 0.1..3600


# What a daemon calls itself in the fleet view; at most this many characters.
MAX_NODE_NAME = 100


@dataclass(frozen=True)
class DaemonConfig:
    # One URL, or the nodes of one cluster: each process connects to one of them
    # (shuffled) and moves on to the next when it loses it.
    broker: tuple[str, ...] = (DEFAULT_BROKER,)
    socket: str = DEFAULT_SOCKET  # absolute after loading
    socket_mode: int = 0o600
    allow_users: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()
    pidfile: str = "/run/qsupervisor/qsupervisord.pid"  # absolute after loading
    logfile: str = "/var/log/qsupervisor/qsupervisord.log"  # "-" means stderr; else absolute
    log_dir: str = "/var/log/qsupervisor"  # absolute
    log_format: str = "auto"  # auto | json | console | journal
    log_level: str = "info"  # debug | info | warning | error
    log_max_size: int = 50 * 1024 * 1024  # bytes; rotation size of captured worker output
    log_backups: int = 5
    path: tuple[str, ...] = ()  # absolute dirs
    include: tuple[str, ...] = ()  # the globs as written
    delay: DelayConfig = DelayConfig()
    # The broker's own consumer_timeout, in seconds; 0 = the broker has none. Only used
    # to refuse job timeouts the broker would cut short.
    consumer_timeout: float = 1800.0
    metrics: MetricsConfig = MetricsConfig()
    # How the daemon names itself in the fleet view; two daemons on one machine need two.
    node_name: str = field(default_factory=gethostname)
    fleet: FleetConfig = FleetConfig()


# A queue argument's value as pika encodes it into an AMQP table.
QueueArgument = Union[str, int, bool]


@dataclass(frozen=True)
class Binding:
    """A binding of the program queue to an exchange, which is declared with it."""

    exchange: str
    routing_key: str = ""
    type: str = "direct"  # the exchange's type: direct | fanout | topic
    durable: bool = True  # the exchange's; as its other declarers have it

    def __str__(self) -> str:
        return f"exchange '{self.exchange}' key '{self.routing_key}'"


@dataclass(frozen=True)
class Autoscale:
    """How an autoscaled program (workers: {min, max}) follows its queue; the rule is in
    docs/architecture.md ("Autoscaling") and master/autoscale.py."""

    target_wait: float = 10.0  # seconds, > 0: scale up when a message would wait longer
    # Scale down only while the estimated wait is below this fraction of target_wait (the
    # hysteresis band: between the two, the count holds).
    down_below: float = 0.1  # 0..1
    # ... and while the workers left would have been busy at most this fraction of the window.
    utilisation: float = 0.75  # 0 < u <= 1
    step_up: int = 0  # most workers added by one decision; 0 = no limit but max
    step_down: int = 1  # most workers removed by one decision, >= 1
    # Seconds after any change before the next scale-up; skipped by a host alone on the
    # queue with every slot consuming (its reading then shows its last change).
    cooldown_up: float = 6.0
    cooldown_down: float = 60.0  # seconds after any change before the next scale-down
    window: float = 20.0  # seconds of job completions the rate and utilisation are read over


@dataclass(frozen=True)
class WorkerBounds:
    """`workers: {min: N, max: M}` as the parser returns it; the loader splits it into
    ProgramConfig.workers (min) and workers_max."""

    min: int = 1
    max: int = 1


@dataclass(frozen=True)
class ProgramConfig:
    name: str
    queue: str  # defaults to name
    # Exactly one of handler and command is set.
    handler: str = ""  # "module:callable"; module dotted, callable may be a dotted attribute path
    # argv run for each job, the body on its stdin; may hold placeholders (placeholders.py)
    command: tuple[str, ...] = ()
    workers: int = 1  # >= 0; the fixed count, or the minimum of an autoscaled program
    # The maximum of an autoscaled program (workers: {min, max}); None: a fixed count.
    workers_max: int | None = None
    preload: tuple[str, ...] = ()  # dotted module names
    max_jobs: int = 0  # >= 0, 0 = never recycle
    max_jobs_jitter: int = 0  # >= 0
    prefetch: int = 1  # 1..65535
    stop_timeout: float = 30.0  # seconds, > 0
    start_retries: int = 5  # >= 1: consecutive failures to reach RUNNING before FATAL
    autostart: bool = True
    environment: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    directory: str | None = None  # absolute; exists
    user: str | None = None  # exists (pwd)
    group: str | None = None  # exists (grp)
    timeout: float = 0.0  # seconds per job; 0 = no limit; < the daemon's consumer_timeout
    attempts: int = 5  # >= 1: total tries before a message is dead-lettered
    backoff: Backoff = Backoff()
    delay_exchange: str = ""  # the loader fills in "<queue>.delay"
    dead_letter_queue: str = ""  # the loader fills in "<queue>.failed"
    # quorum | classic. Quorum by default: its messages are replicated and fsynced, so a
    # node lost does not lose jobs, which is the promise here; classic is faster but
    # lives on one node. (Crashes are counted by the master either way, not by the broker.)
    queue_type: str = "quorum"
    # More arguments of the program queue's declaration (x-max-priority, ...), as sorted
    # (name, value) pairs: a queue another framework declares must be declared with its
    # arguments exactly, or RabbitMQ refuses one of the two declarations.
    queue_arguments: tuple[tuple[str, QueueArgument], ...] = ()
    # Exchanges the program queue is bound to (a framework's exchange its producers
    # publish to), declared with the queue.
    bindings: tuple[Binding, ...] = ()
    format: str = "json"  # json | raw; the loader makes it raw for a command unless set
    max_memory: int = 0  # bytes; 0 = no limit: recycle after a job when RSS exceeds it
    max_age: float = 0.0  # seconds; 0 = no limit: recycle after this long, after the job in hand
    autoscale: Autoscale = Autoscale()  # used while workers_max is set
    # Where the program was defined ("file:line"). Not compared: moving a program to
    # another include file is not a change that should restart its workers.
    source: str = field(default="", compare=False)

    @property
    def autoscaled(self) -> bool:
        return self.workers_max is not None

    def settings_without_workers(self) -> ProgramConfig:
        """A copy with workers=0, so 'only the worker count changed' is one comparison."""
        return dataclasses.replace(self, workers=0)


@dataclass(frozen=True)
class Config:
    path: str  # absolute path of the main file
    daemon: DaemonConfig
    programs: Mapping[str, ProgramConfig]  # in definition order (main file, then includes)
    # The text of every file read (absolute path -> text), main file first: a re-exec
    # hands over the configuration that was applied, which the files on disk may no
    # longer hold, and the new code parses it again.
    texts: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
