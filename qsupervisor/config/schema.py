"""The configuration schema, as data: one row per key, per section.

To add a setting, add a field (with its default) to the dataclass in model.py and one
KeySpec row here. Defaults are read from the dataclass so they are written once; a
unit test checks that the tables and the dataclasses name the same keys. A setting whose
value is a mapping (backoff, delay) has a frozen dataclass and a Section of its own, named
in its KeySpec, so its sub-keys get the same checks and "did you mean" hints.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import pwd
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qsupervisor import placeholders

from . import brokerurl, fields, queueargs
from .fields import FieldInput, Invalid, Parser, describe
from .model import (
    MAX_NODE_NAME,
    Autoscale,
    Backoff,
    Binding,
    DaemonConfig,
    DelayConfig,
    FleetConfig,
    MetricsConfig,
    ProgramConfig,
    WorkerBounds,
)
from .problems import KeyPath

PROGRAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Linux sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
MAX_QUEUE_NAME = 255  # bytes, an AMQP 0-9-1 short string
# The delay levels' queues and exchanges are named "<delay_exchange>.<level>" and the
# like, which must still fit in MAX_QUEUE_NAME: leave room for the suffixes.
MAX_DELAY_EXCHANGE = 200
# Finer than 10 ms buys nothing (TTLs are whole milliseconds, and expiry is not that
# punctual) but costs levels; coarser than a minute rounds delays up by surprising amounts.
MIN_DELAY_RESOLUTION = 0.01
MAX_DELAY_RESOLUTION = 60.0
_OCTAL_LITERAL = re.compile(r"0[0-7]+|0o[0-7]+")


@dataclass(frozen=True)
class KeySpec:
    parse: Parser
    description: str
    required: bool = False
    # For a key whose value is a mapping of settings (backoff, delay): its table. Such a
    # key is parsed even when one of its sub-values could not be converted, so a broken
    # sub-value does not hide the problems of its neighbours.
    section: Section | None = None


@dataclass(frozen=True)
class Section:
    title: str  # how problems and docs name the section
    model: type
    keys: Mapping[str, KeySpec]

    def default(self, key: str) -> Any:
        """The dataclass default for `key` (None for keys without one, like handler)."""
        for f in dataclasses.fields(self.model):
            if f.name == key:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                return None
        raise KeyError(key)


# -- qsupervisord parsers ------------------------------------------------------------


def broker_url(field: FieldInput) -> str:
    problem = brokerurl.url_problem(field.value)
    if problem:
        raise Invalid(problem)
    return str(field.value)


def broker_urls(field: FieldInput) -> tuple[str, ...]:
    """One URL, or a list of them: the nodes of one cluster. They must name one virtual
    host (the program's queues live in it) and each node once."""
    if not isinstance(field.value, list):
        return (broker_url(field),)
    if not field.value:
        raise Invalid("expected an amqp:// or amqps:// URL, or a list of them (the nodes of "
                      "one cluster), got an empty list")
    urls = fields.list_of(broker_url, "amqp:// or amqps:// URLs")(field)
    errors: list[tuple[KeyPath, str]] = [((index,), why) for index, why
                                         in brokerurl.cluster_problems(urls)]
    if errors:
        raise Invalid(errors=errors)
    return urls


def socket_path(field: FieldInput) -> str:
    path = fields.file_in_writable_dir(field)
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH:
        raise Invalid(
            f"socket path {path} is {length} bytes long; Unix sockets allow at most "
            f"{MAX_SOCKET_PATH}, use a shorter path"
        )
    return path


def socket_mode(field: FieldInput) -> int:
    """'0600', '660' or an unquoted 0600 (which YAML already read as octal)."""
    value = field.value
    hint = "expected an octal file mode such as '0600' (quote it)"
    if isinstance(value, str):
        digits = value.strip()
        digits = digits[2:] if digits.startswith("0o") else digits
        if not digits or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o777:
            raise Invalid(f"{hint}, got {value!r}")
        return int(digits, 8)
    raw = field.raw() or ""
    if isinstance(value, int) and not isinstance(value, bool):
        # An unquoted 660 is the decimal number 660; only a leading 0 makes YAML read octal.
        if _OCTAL_LITERAL.fullmatch(raw) and value <= 0o777:
            return value
        raise Invalid(f"{hint}; unquoted {raw or value} is read as the decimal number {value}")
    raise Invalid(f"{hint}, got {describe(value)}")


def logfile(field: FieldInput) -> str:
    if field.value == "-":  # stderr, e.g. under systemd which captures it
        return "-"
    return fields.file_in_writable_dir(field)


def user_name(field: FieldInput) -> str:
    value = fields.text("a user name")(field)
    try:
        pwd.getpwnam(value)
    except KeyError:
        raise Invalid(f"no such user {value!r}") from None
    return value


def group_name(field: FieldInput) -> str:
    value = fields.text("a group name")(field)
    try:
        grp.getgrnam(value)
    except KeyError:
        raise Invalid(f"no such group {value!r}") from None
    return value


def include_glob(field: FieldInput) -> str:
    # Kept as written: the loader expands it against the config file's directory.
    return fields.text("a file path or glob")(field)


def delay_resolution(field: FieldInput) -> float:
    seconds = fields.duration()(field)
    if not MIN_DELAY_RESOLUTION <= seconds <= MAX_DELAY_RESOLUTION:
        low = fields.show_duration(MIN_DELAY_RESOLUTION)
        high = fields.show_duration(MAX_DELAY_RESOLUTION)
        raise Invalid(f"expected a duration between {low} and {high}, got {describe(field.value)}")
    return seconds


def delay(field: FieldInput) -> DelayConfig:
    return DelayConfig(**section_values(field, DELAY))


def metrics_listen(field: FieldInput) -> str:
    """host:port, [v6]:port, or a bare port (loopback: the endpoint has no authentication,
    so it listens wider only where the file says so). IP addresses only ('localhost'
    aside): the daemon must not depend on name resolution to start."""
    value = field.value
    hint = "expected host:port such as '127.0.0.1:9808' or '[::1]:9808', or a port"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{hint}, got {describe(field.value)}")
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    elif not host:
        host = "127.0.0.1"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Invalid(f"{hint}; the port must be 1..65535, got {value!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    literal = host[1:-1] if bracketed else host
    if literal == "localhost":
        literal = "127.0.0.1"
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        raise Invalid(f"{hint}; {host!r} is not an IP address (names are not resolved; "
                      "write 127.0.0.1, ::1 or the address of an interface)") from None
    if address.version == 6 and not bracketed and literal == host:
        raise Invalid(f"{hint}; write an IPv6 address in brackets: '[{literal}]:{port_text}'")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{int(port_text)}"


def metrics(field: FieldInput) -> MetricsConfig:
    return MetricsConfig(**section_values(field, METRICS))


# An announcement every 0.1 s is already a test's pace; one an hour is a fleet view of
# nothing (a daemon is stale after three intervals).
MIN_FLEET_INTERVAL = 0.1
MAX_FLEET_INTERVAL = 3600.0


def fleet_interval(field: FieldInput) -> float:
    seconds = fields.duration()(field)
    if not MIN_FLEET_INTERVAL <= seconds <= MAX_FLEET_INTERVAL:
        low = fields.show_duration(MIN_FLEET_INTERVAL)
        high = fields.show_duration(MAX_FLEET_INTERVAL)
        raise Invalid(f"expected a duration between {low} and {high}, got {describe(field.value)}")
    return seconds


def fleet(field: FieldInput) -> FleetConfig:
    return FleetConfig(**section_values(field, FLEET))


def node_name(field: FieldInput) -> str:
    """Shown in every other daemon's fleet view, and published: printable, bounded."""
    value = field.value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = field.raw() or str(value)  # node_name: 01 is the name "01"
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a name for this daemon such as 'web-3', got {describe(value)}")
    if not value.isprintable():
        raise Invalid(f"a node name must be printable (no control characters), got {value!r}")
    if len(value) > MAX_NODE_NAME:
        raise Invalid(f"a node name is at most {MAX_NODE_NAME} characters, got {len(value)}")
    return value


# -- program parsers -----------------------------------------------------------------


def handler(field: FieldInput) -> str:
    value = field.value
    example = "'myapp.jobs:send_email'"
    if not isinstance(value, str):
        raise Invalid(f"expected 'module:callable' such as {example}, got {describe(value)}")
    module, sep, attr = value.partition(":")
    # Only the syntax is checked; importing user code here would run it in the master.
    if not sep or not fields.is_dotted_name(module) or not fields.is_dotted_name(attr):
        raise Invalid(f"expected 'module:callable' such as {example}, got {value!r}")
    return value


def command(field: FieldInput) -> tuple[str, ...]:
    """An argv list, or one string split as a POSIX shell would (no shell runs it)."""
    value = field.value
    example = "[php, yii, queue/exec, '{message_id}', '{timeout}', '{attempt}', '{worker_pid}']"
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:  # "No closing quotation"
            raise Invalid(f"cannot split {value!r} into arguments: {exc}") from None
        where: list[tuple[KeyPath, str]] = []
    elif isinstance(value, list):
        argv = []
        where = []
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                where.append(((index,), f"expected a string, got {describe(item)}"))
            else:
                argv.append(str(item))  # a bare 30 in YAML is the argument "30"
    else:
        raise Invalid(f"expected a list of arguments such as {example}, or one string, "
                      f"got {describe(value)}")
    if where:
        raise Invalid(errors=where)
    if not argv or not argv[0]:
        raise Invalid(f"expected the program to run and its arguments, such as {example}")
    errors: list[tuple[KeyPath, str]] = []
    for index, arg in enumerate(argv):
        problem = placeholders.problem(arg)
        if problem:
            # A string is one YAML value: its problems are reported at the key itself.
            at: KeyPath = (index,) if isinstance(value, list) else ()
            errors.append((at, problem if at else f"argument {index} ({arg!r}): {problem}"))
    if errors:
        raise Invalid(errors=errors)
    if placeholders.uses_placeholders(argv[0]):
        raise Invalid("the program to run (the first argument) cannot be a placeholder",
                      at=(0,) if isinstance(value, list) else ())
    return tuple(argv)


def queue_name(field: FieldInput) -> str:
    value = field.value
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected a queue name, got {describe(value)}")
    problem = queue_name_problem(value)
    if problem:
        raise Invalid(problem)
    return value


def queue_name_problem(value: str) -> str | None:
    """Why RabbitMQ would refuse `value` as a queue name, or None.

    Separate from the parser so the loader can check names it derives (<queue>.failed).
    """
    length = len(value.encode("utf-8"))
    if length > MAX_QUEUE_NAME:
        return f"queue names are at most {MAX_QUEUE_NAME} bytes, got {length}"
    if value.startswith("amq."):
        return f"queue names starting with 'amq.' are reserved by RabbitMQ, got {value!r}"
    return None


def delay_exchange(field: FieldInput) -> str:
    value = field.value
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected an exchange name, got {describe(value)}")
    problem = delay_exchange_problem(value)
    if problem:
        raise Invalid(problem)
    return value


def delay_exchange_problem(value: str) -> str | None:
    """Why `value` cannot name a program's delay exchange, or None."""
    length = len(value.encode("utf-8"))
    if length > MAX_DELAY_EXCHANGE:
        return (f"a delay exchange name is at most {MAX_DELAY_EXCHANGE} bytes (its delay levels "
                f"are named after it), got {length}")
    if value.startswith("amq."):
        return f"exchange names starting with 'amq.' are reserved by RabbitMQ, got {value!r}"
    return None


def backoff(field: FieldInput) -> Backoff:
    values = section_values(field, BACKOFF)
    initial = values.get("initial", BACKOFF.default("initial"))
    maximum = values.get("max", BACKOFF.default("max"))
    if maximum < initial:
        shown_initial, shown_max = fields.show_duration(initial), fields.show_duration(maximum)
        if "max" in values:
            raise Invalid(f"{shown_max} is below backoff.initial ({shown_initial}); "
                          "max caps every delay, so it must be at least initial", at=("max",))
        raise Invalid(f"{shown_initial} is above backoff.max ({shown_max}, the default); "
                      "lower initial or set max", at=("initial",))
    return Backoff(**values)


def workers(field: FieldInput) -> int | WorkerBounds:
    """A fixed count, or {min, max} for an autoscaled program."""
    if not isinstance(field.value, dict):
        return int(_non_negative(field))
    values = section_values(field, WORKERS)
    for key in ("min", "max"):
        if key not in values:
            raise Invalid(f"missing required key {key!r}: an autoscaled program needs both "
                          "min and max")
    if values["max"] < max(1, values["min"]):
        raise Invalid(f"max ({values['max']}) must be at least min ({values['min']}) and 1",
                      at=("max",))
    return WorkerBounds(**values)


def autoscale(field: FieldInput) -> Autoscale:
    return Autoscale(**section_values(field, AUTOSCALE))


def environment(field: FieldInput) -> tuple[tuple[str, str], ...]:
    value = field.value
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of variable names to values, got {describe(value)}")
    pairs: list[tuple[str, str]] = []
    errors: list[tuple[tuple[Any, ...], str]] = []
    for name, item in value.items():
        try:
            pairs.append((_env_name(name), _env_value(field.item(item, (name,)))))
        except Invalid as exc:
            errors.append(((name,), exc.errors[0][1]))
    if errors:
        raise Invalid(errors=errors)
    return tuple(sorted(pairs))


def _env_name(name: str) -> str:
    if not name or "=" in name or "\0" in name:
        raise Invalid("a variable name must be non-empty and contain no '=' or NUL")
    return name


def _env_value(field: FieldInput) -> str:
    value = field.value
    if isinstance(value, (list, dict)):
        raise Invalid(f"expected a string, number or boolean, got {describe(value)}")
    if value is None:
        return ""  # "FOO:" with nothing after it: an empty variable
    # Keep the text as written: "1.10" must not become "1.1", nor "true" become "True".
    text = field.raw()
    text = str(value) if text is None else text
    if "\0" in text:
        raise Invalid("an environment value cannot contain a NUL character")
    return text


def _binding(field: FieldInput) -> Binding:
    if not isinstance(field.value, dict):
        raise Invalid("expected a mapping such as {exchange: jobs, routing_key: ''}, "
                      f"got {describe(field.value)}")
    return Binding(**section_values(field, BINDING))


def bindings(field: FieldInput) -> tuple[Binding, ...]:
    """A list of {exchange, routing_key, type, durable}; each exchange and key once."""
    parsed: tuple[Binding, ...] = fields.list_of(_binding, "bindings")(field)
    errors: list[tuple[KeyPath, str]] = []
    for index, binding in enumerate(parsed):
        earlier = [b for b in parsed[:index] if b.exchange == binding.exchange]
        if any(b.routing_key == binding.routing_key for b in earlier):
            errors.append(((index,), f"the same binding as item {parsed.index(binding)}"))
        elif any(b.type != binding.type or b.durable != binding.durable for b in earlier):
            errors.append(((index,), f"exchange '{binding.exchange}' is declared differently "
                                     "by an earlier item: one exchange has one type"))
    if errors:
        raise Invalid(errors=errors)
    return parsed


# -- the tables ----------------------------------------------------------------------

_non_negative = fields.integer(minimum=0)

BACKOFF = Section("backoff", Backoff, {
    "initial": KeySpec(fields.duration(positive=True), "delay before the first retry"),
    "factor": KeySpec(fields.number(minimum=1), "each further retry waits this many times longer"),
    "max": KeySpec(fields.duration(positive=True), "no retry waits longer than this"),
    "jitter": KeySpec(fields.number(minimum=0, maximum=1),
                      "vary each delay by up to this fraction either way, so retries spread out"),
})

WORKERS = Section("workers", WorkerBounds, {
    "min": KeySpec(fields.integer(minimum=0, maximum=4096),
                   "fewest workers an autoscaled program runs (and starts with)"),
    "max": KeySpec(fields.integer(minimum=1, maximum=4096),
                   "most workers an autoscaled program runs"),
})

AUTOSCALE = Section("autoscale", Autoscale, {
    "target_wait": KeySpec(fields.duration(positive=True),
                           "scale up when a message would wait longer than this"),
    "down_below": KeySpec(fields.number(minimum=0, maximum=1),
                          "scale down only while the estimated wait is below this fraction "
                          "of target_wait"),
    "utilisation": KeySpec(fields.number(minimum=0.01, maximum=1),
                           "scale down only while the workers left would be busy at most "
                           "this fraction of the time"),
    "step_up": KeySpec(fields.integer(minimum=0),
                       "most workers one decision adds; 0 = no limit but max"),
    "step_down": KeySpec(fields.integer(minimum=1), "most workers one decision removes"),
    "cooldown_up": KeySpec(fields.duration(), "time after a change before the next scale-up"),
    "cooldown_down": KeySpec(fields.duration(),
                             "time after a change before the next scale-down"),
    "window": KeySpec(fields.duration(positive=True),
                      "how far back job completions are read for the rate"),
})

DELAY = Section("delay", DelayConfig, {
    "resolution": KeySpec(delay_resolution,
                          "delays are rounded up to a multiple of this; finer needs more levels"),
})

METRICS = Section("metrics", MetricsConfig, {
    "listen": KeySpec(metrics_listen, "host:port of the Prometheus endpoint (GET /metrics); "
                      "a bare port listens on 127.0.0.1; unset = no endpoint"),
})

FLEET = Section("fleet", FleetConfig, {
    "interval": KeySpec(fleet_interval, "how often the daemon announces itself on the broker; "
                        "others mark it stale after 3 intervals unheard, forget it after 10"),
})

BINDING = Section("binding", Binding, {
    "exchange": KeySpec(queueargs.exchange_name, "the exchange to bind the queue to; declared "
                        "if missing", required=True),
    "routing_key": KeySpec(queueargs.routing_key, "the binding's routing key; default ''"),
    "type": KeySpec(fields.choice(*queueargs.EXCHANGE_TYPES), "the exchange's type"),
    "durable": KeySpec(fields.boolean, "whether the exchange is durable, as its other "
                       "declarers have it"),
})

DAEMON = Section("qsupervisord", DaemonConfig, {
    "broker": KeySpec(broker_urls, "RabbitMQ URL (amqp:// or amqps://), or a list of the URLs "
                      "of one cluster's nodes, that every worker connects to"),
    "socket": KeySpec(socket_path, "control socket path; relative to this file's directory"),
    "socket_mode": KeySpec(socket_mode, "permission bits of the control socket, e.g. '0660'"),
    "allow_users": KeySpec(fields.list_of(user_name, "user names"),
                           "users allowed to use the control socket"),
    "allow_groups": KeySpec(fields.list_of(group_name, "group names"),
                            "groups whose members may use the control socket"),
    "pidfile": KeySpec(fields.file_in_writable_dir, "where the daemon writes its pid"),
    "logfile": KeySpec(logfile, "the daemon's own log; '-' for stderr"),
    "log_dir": KeySpec(fields.writable_dir, "directory for captured worker output"),
    "log_format": KeySpec(fields.choice("auto", "json", "console", "journal"),
                          "auto picks journal under systemd, console on a terminal, "
                          "json otherwise"),
    "log_level": KeySpec(fields.choice("debug", "info", "warning", "error"), "daemon log level"),
    "log_max_size": KeySpec(fields.size(minimum=0),
                            "rotate a worker output file at this size; 0 = never (logrotate does)"),
    "log_backups": KeySpec(_non_negative, "rotated worker output files to keep"),
    "path": KeySpec(fields.list_of(fields.existing_dir, "directories"),
                    "directories put in front of sys.path for preload and handler imports"),
    "include": KeySpec(fields.list_of(include_glob, "file paths or globs"),
                       "files (globs allowed) holding more 'programs:'"),
    "delay": KeySpec(delay, "the delay-level chain used for delayed and retried messages",
                     section=DELAY),
    "consumer_timeout": KeySpec(fields.duration(),
                                "the broker's consumer_timeout; 0 if the broker has none"),
    "metrics": KeySpec(metrics, "the Prometheus endpoint: listen", section=METRICS),
    "node_name": KeySpec(node_name, "this daemon's name in the fleet view; default: the host name"),
    "fleet": KeySpec(fleet, "the fleet view: interval of the daemon's announcements",
                     section=FLEET),
})

PROGRAM = Section("program", ProgramConfig, {
    "handler": KeySpec(handler, "'module:callable' run for each message (or set command)"),
    "command": KeySpec(command, "a program run for each message, the body on its stdin "
                                "(instead of handler)"),
    "queue": KeySpec(queue_name, "queue to consume; defaults to the program name"),
    "workers": KeySpec(workers, "number of worker processes, or {min, max} to autoscale",
                       section=WORKERS),
    "autoscale": KeySpec(autoscale, "how an autoscaled program follows its queue: "
                         "target_wait, down_below, utilisation, step_up, step_down, "
                         "cooldown_up, cooldown_down, window", section=AUTOSCALE),
    "preload": KeySpec(fields.list_of(fields.dotted_name, "module names"),
                       "modules the leader imports once, before forking workers"),
    "max_jobs": KeySpec(_non_negative, "recycle a worker after this many jobs; 0 = never"),
    "max_jobs_jitter": KeySpec(_non_negative,
                               "add 0..N to max_jobs per worker so they do not recycle together"),
    "prefetch": KeySpec(fields.integer(minimum=1, maximum=65535), "unacked messages per worker"),
    "stop_timeout": KeySpec(fields.duration(positive=True),
                            "how long a stopping worker may finish its job before SIGKILL"),
    "start_retries": KeySpec(fields.integer(minimum=1),
                             "consecutive failed starts before a worker slot goes FATAL"),
    "autostart": KeySpec(fields.boolean, "start the program with the daemon"),
    "environment": KeySpec(environment, "extra environment variables for the workers"),
    "directory": KeySpec(fields.existing_dir, "working directory of the workers"),
    "user": KeySpec(user_name, "run the program's processes as this user"),
    "group": KeySpec(group_name, "run the program's processes with this group"),
    "timeout": KeySpec(fields.duration(), "time limit of one job, then the worker is replaced; 0 = none"),
    "attempts": KeySpec(fields.integer(minimum=1), "total tries of a message before it is dead-lettered"),
    "backoff": KeySpec(backoff, "delays between tries: initial, factor, max, jitter", section=BACKOFF),
    "delay_exchange": KeySpec(delay_exchange, "exchange for delayed messages; default '<queue>.delay'"),
    "dead_letter_queue": KeySpec(queue_name, "where failed messages go; default '<queue>.failed'"),
    "queue_type": KeySpec(fields.choice("quorum", "classic"),
                          "quorum (replicated: the safe default) or classic (faster)"),
    "queue_arguments": KeySpec(queueargs.queue_arguments,
                               "more arguments of the queue's declaration, e.g. x-max-priority"),
    "bindings": KeySpec(bindings, "exchanges the queue is bound to (a framework's exchange)"),
    "format": KeySpec(fields.choice("json", "raw"), "json, or raw to pass the body bytes as they are"),
    "max_memory": KeySpec(fields.size(), "recycle a worker after a job when its RSS exceeds this; 0 = never"),
    "max_age": KeySpec(fields.duration(), "recycle a worker after this long, after its job; 0 = never"),
})

# Keys of the model that are not settings: they come from the YAML structure.
PROGRAM_IMPLICIT = ("name", "source", "workers_max")


def parse_section(
    field: FieldInput, section: Section
) -> tuple[dict[str, Any], list[tuple[tuple[Any, ...], str]]]:
    """Parse a mapping against a section table.

    Returns the values that parsed (only keys present in the file, so the dataclass
    supplies defaults) and (path, message) for every problem, in document order.
    """
    values: dict[str, Any] = {}
    errors: list[tuple[tuple[Any, ...], str]] = []
    mapping: Mapping[str, Any] = field.value
    for key, value in mapping.items():
        spec = section.keys.get(key)
        if _already_reported(field, key, spec):
            continue
        if spec is None:
            errors.append(((key,), "unknown key" + fields.did_you_mean(key, section.keys)))
            continue
        try:
            values[key] = spec.parse(field.item(value, (key,)))
        except Invalid as exc:
            errors.extend(((key,) + at, message) for at, message in exc.errors)
    for key, spec in section.keys.items():
        if spec.required and key not in mapping:
            errors.append(((), f"missing required key {key!r}"))
    return values, errors


def _already_reported(field: FieldInput, key: str, spec: KeySpec | None) -> bool:
    """True if the value of `key` failed to convert, so its problem is already known."""
    path = field.path + (key,)
    if spec is not None and spec.section is not None:
        return path in field.doc.broken  # its own table skips its broken sub-values
    return field.doc.is_broken(path)


def section_values(field: FieldInput, section: Section) -> dict[str, Any]:
    """The parsed keys of a nested mapping (backoff, delay); raise Invalid for any problem.

    Null, as left by commenting out every sub-key, means all defaults.
    """
    if field.value is None:
        return {}
    if not isinstance(field.value, dict):
        keys = ", ".join(section.keys)
        raise Invalid(f"expected a mapping with the keys {keys}, got {describe(field.value)}")
    values, errors = parse_section(field, section)
    if errors:
        raise Invalid(errors=errors)
    return values
