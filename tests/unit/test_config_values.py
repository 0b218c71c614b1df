from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from qsupervisor.config import (
    DaemonConfig,
    ProgramConfig,
    fields,
    load_config,
    schema,
)

from .config_files import daemon_file, problems, program_file, write

MISSING_USER = "qsv-no-such-user"
MISSING_GROUP = "qsv-no-such-group"


# -- problems: sections -----------------------------------------------------------------


def test_sections_of_the_wrong_shape_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "qsupervisord: yes\nprograms: [orders]\n")
    assert problems(path) == [
        f"{path}:1: qsupervisord: expected a mapping of settings, got true",
        f"{path}:2: programs: expected a mapping of program names to settings, got a list",
    ]


def test_program_with_null_settings_reports_missing_handler(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n  orders:\n")
    assert problems(path) == [f"{path}:2: programs.orders: missing required key 'handler' (a Python callable, 'module:callable') or 'command' (a program run for each job)"]


@pytest.mark.parametrize("name", ["-orders", "_x", "a b", "a/b", "é"])
def test_invalid_program_names_are_reported(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "queues.yaml", f"programs:\n  '{name}': {{handler: 'a:b'}}\n")
    assert problems(path) == [
        f"{path}:2: programs.{name}: invalid program name {name!r}: use letters, digits, "
        "'_', '.' and '-', starting with a letter or digit"
    ]


def test_unknown_program_key_without_close_match_says_unknown(tmp_path: Path) -> None:
    path = program_file(tmp_path, "colour: blue")
    assert problems(path) == [f"{path}:4: programs.orders.colour: unknown key"]


@pytest.mark.parametrize(
    "extra, key, message",
    [
        ("workers: four", "workers", "expected an integer >= 0, got 'four'"),
        ("workers: true", "workers", "expected an integer >= 0, got true"),
        ("workers: -1", "workers", "expected an integer >= 0, got -1"),
        ("workers: 1.5", "workers", "expected an integer >= 0, got 1.5"),
        ("max_jobs: -5", "max_jobs", "expected an integer >= 0, got -5"),
        ("max_jobs_jitter: x", "max_jobs_jitter", "expected an integer >= 0, got 'x'"),
        ("prefetch: 0", "prefetch", "expected an integer between 1 and 65535, got 0"),
        ("prefetch: 65536", "prefetch", "expected an integer between 1 and 65535, got 65536"),
        ("start_retries: 0", "start_retries", "expected an integer >= 1, got 0"),
        ("autostart: 'yes'", "autostart", "expected true or false, got 'yes'"),
        ("autostart: 1", "autostart", "expected true or false, got 1"),
        ("stop_timeout: soon", "stop_timeout",
         "expected a duration such as 30, '500ms', '30s', '5m', '1h' or '2d', got 'soon'"),
        ("stop_timeout: 0", "stop_timeout", "expected a duration > 0, got 0"),
        ("stop_timeout: 0s", "stop_timeout", "expected a duration > 0, got '0s'"),
        ("stop_timeout: -5s", "stop_timeout", "a duration cannot be negative, got '-5s'"),
        ("stop_timeout: true", "stop_timeout",
         "expected a duration such as 30, '500ms', '30s', '5m', '1h' or '2d', got True"),
        ("queue: ''", "queue", "expected a queue name, got ''"),
        ("queue: 5", "queue", "expected a queue name, got 5"),
        ("queue: amq.orders", "queue", "queue names starting with 'amq.' are reserved by RabbitMQ, got 'amq.orders'"),
        ("queue: " + "q" * 256, "queue", "queue names are at most 255 bytes, got 256"),
        ("queue: " + "é" * 128, "queue", "queue names are at most 255 bytes, got 256"),
        ("preload: app.models", "preload", "expected a list of module names, got 'app.models'"),
        ("preload: [app.models, 'app-x']", "preload[1]",
         "expected a dotted module name such as 'myapp.models', got 'app-x'"),
        ("environment: [A]", "environment", "expected a mapping of variable names to values, got a list"),
        ("environment: {A: [1]}", "environment.A", "expected a string, number or boolean, got a list"),
        ("environment: {A: {b: 1}}", "environment.A", "expected a string, number or boolean, got a mapping"),
        ("environment: {'A=B': 1}", "environment.A=B",
         "a variable name must be non-empty and contain no '=' or NUL"),
        ("environment: {A: \"x\\0y\"}", "environment.A", "an environment value cannot contain a NUL character"),
        (f"user: {MISSING_USER}", "user", f"no such user {MISSING_USER!r}"),
        ("user: 0", "user", "expected a user name, got 0"),
        (f"group: {MISSING_GROUP}", "group", f"no such group {MISSING_GROUP!r}"),
        ("group: ''", "group", "expected a group name, got ''"),
        ("directory: 7", "directory", "expected a path, got 7"),
        ("directory: \"a\\0b\"", "directory", "a path cannot contain a NUL character"),
    ],
)
def test_bad_program_values_are_reported_with_line_and_key(
    tmp_path: Path, extra: str, key: str, message: str
) -> None:
    path = program_file(tmp_path, extra)
    assert problems(path) == [f"{path}:4: programs.orders.{key}: {message}"]


def test_preload_item_errors_point_at_each_item_line(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app:run
            preload:
              - app.models
              - 1bad
              - also bad
        """)
    assert problems(path) == [
        f"{path}:6: programs.orders.preload[1]: expected a dotted module name such as 'myapp.models', got '1bad'",
        f"{path}:7: programs.orders.preload[2]: expected a dotted module name such as 'myapp.models', got 'also bad'",
    ]


@pytest.mark.parametrize(
    "handler", ["app.jobs.handle", "app:", ":handle", "1app:handle", "app:class", "app::x", "app:a:b", "a..b:c"]
)
def test_handler_must_be_module_colon_callable(tmp_path: Path, handler: str) -> None:
    path = write(tmp_path / "queues.yaml", f"programs:\n  orders:\n    handler: '{handler}'\n")
    assert problems(path) == [
        f"{path}:3: programs.orders.handler: expected 'module:callable' such as "
        f"'myapp.jobs:send_email', got {handler!r}"
    ]


def test_handler_that_is_not_a_string_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n  orders:\n    handler: [a]\n")
    assert problems(path) == [
        f"{path}:3: programs.orders.handler: expected 'module:callable' such as 'myapp.jobs:send_email', got a list"
    ]


def test_handler_is_never_imported(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n  x:\n    handler: qsv_no_such_module:run\n")
    assert load_config(path).programs["x"].handler == "qsv_no_such_module:run"


def test_program_directory_must_exist_and_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = write(tmp_path / "queues.yaml", """
        programs:
          a: {handler: "a:b", directory: missing}
          b: {handler: "a:b", directory: file}
        """)
    assert problems(path) == [
        f"{path}:2: programs.a.directory: directory {tmp_path}/missing does not exist",
        f"{path}:3: programs.b.directory: directory {tmp_path}/file is not a directory",
    ]


@pytest.mark.parametrize(
    "extra, key, message",
    [
        ("broker: http://rabbit/", "broker", "expected an amqp:// or amqps:// URL, got a URL with scheme 'http'"),
        ("broker: rabbit", "broker", "expected an amqp:// or amqps:// URL, got a URL with no scheme"),
        ("broker: 5", "broker", "expected an amqp:// or amqps:// URL, got 5"),
        ("broker: []", "broker", "expected an amqp:// or amqps:// URL, or a list of them (the "
         "nodes of one cluster), got an empty list"),
        ("broker: [amqp://a/, http://b/]", "broker[1]",
         "expected an amqp:// or amqps:// URL, got a URL with scheme 'http'"),
        ("broker: [amqp://a/, amqp://b/, amqp://a/]", "broker[2]", "the same URL as item 0"),
        ("broker: [amqp://a/shop, amqp://b/]", "broker[1]",
         "virtual host '/' differs from item 0's 'shop': the nodes of one cluster must name the "
         "same one, where the program's queues live"),
        ("socket: ''", "socket", "expected a path, got ''"),
        ("socket_mode: 600", "socket_mode",
         "expected an octal file mode such as '0600' (quote it); unquoted 600 is read as the decimal number 600"),
        ("socket_mode: 440", "socket_mode",
         "expected an octal file mode such as '0600' (quote it); unquoted 440 is read as the decimal number 440"),
        ("socket_mode: 01777", "socket_mode",
         "expected an octal file mode such as '0600' (quote it); unquoted 01777 is read as the decimal number 1023"),
        ("socket_mode: '0800'", "socket_mode", "expected an octal file mode such as '0600' (quote it), got '0800'"),
        ("socket_mode: '1777'", "socket_mode", "expected an octal file mode such as '0600' (quote it), got '1777'"),
        ("socket_mode: ''", "socket_mode", "expected an octal file mode such as '0600' (quote it), got ''"),
        ("socket_mode: true", "socket_mode", "expected an octal file mode such as '0600' (quote it), got true"),
        ("allow_users: root", "allow_users", "expected a list of user names, got 'root'"),
        (f"allow_users: [{MISSING_USER}]", "allow_users[0]", f"no such user {MISSING_USER!r}"),
        (f"allow_groups: [root, {MISSING_GROUP}]", "allow_groups[1]", f"no such group {MISSING_GROUP!r}"),
        ("log_format: xml", "log_format", "expected one of auto, json, console, journal, got 'xml'"),
        ("log_format: JSON", "log_format", "expected one of auto, json, console, journal, got 'JSON'"),
        ("log_level: warn", "log_level",
         "expected one of debug, info, warning, error, got 'warn'; did you mean 'warning'?"),
        ("log_level: 10", "log_level", "expected one of debug, info, warning, error, got 10"),
        ("log_max_size: 10M", "log_max_size",
         "unknown size unit 'M' in '10M'; use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB "
         "(powers of 1024)"),
        ("log_max_size: big", "log_max_size", "expected a size such as 1048576, '100KB', '512MiB' or '1GB', got 'big'"),
        ("log_backups: -1", "log_backups", "expected an integer >= 0, got -1"),
        ("path: /tmp", "path", "expected a list of directories, got '/tmp'"),
        ("path: [/qsv/no/such/dir]", "path[0]", "directory /qsv/no/such/dir does not exist"),
        ("include: conf.d/*.yaml", "include", "expected a list of file paths or globs, got 'conf.d/*.yaml'"),
        ("include: ['']", "include[0]", "expected a file path or glob, got ''"),
        ("pidfile: 3", "pidfile", "expected a path, got 3"),
    ],
)
def test_bad_daemon_values_are_reported_with_line_and_key(
    tmp_path: Path, extra: str, key: str, message: str
) -> None:
    path = daemon_file(tmp_path, extra)
    assert problems(path) == [f"{path}:2: qsupervisord.{key}: {message}"]


def test_broker_problem_never_shows_the_password(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "broker: http://user:s3cret@rabbit/")
    assert "s3cret" not in "\n".join(problems(path))


def test_socket_path_longer_than_unix_limit_is_reported(tmp_path: Path) -> None:
    long_name = "s" * 120 + ".sock"
    path = daemon_file(tmp_path, f"socket: {long_name}")
    full = f"{tmp_path}/{long_name}"
    assert problems(path) == [
        f"{path}:2: qsupervisord.socket: socket path {full} is {len(full)} bytes long; "
        "Unix sockets allow at most 107, use a shorter path"
    ]


@pytest.mark.parametrize("key", ["socket", "pidfile", "logfile"])
def test_file_under_a_regular_file_cannot_be_created(tmp_path: Path, key: str) -> None:
    (tmp_path / "plain").write_text("")
    path = daemon_file(tmp_path, f"{key}: plain/sub/x")
    assert problems(path) == [
        f"{path}:2: qsupervisord.{key}: cannot create directory {tmp_path}/plain/sub: "
        f"{tmp_path}/plain is not a directory"
    ]


def test_log_dir_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    path = daemon_file(tmp_path, "log_dir: plain")
    assert problems(path) == [
        f"{path}:2: qsupervisord.log_dir: cannot create directory {tmp_path}/plain: "
        f"{tmp_path}/plain is not a directory"
    ]


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory os.access reports as not writable (tests may run as root, who can write anywhere)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: str, mode: int, *args: object, **kwargs: object) -> bool:
        if os.path.abspath(path) == str(locked) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fields.os, "access", access)
    return locked


@pytest.mark.parametrize("key", ["socket", "pidfile", "logfile"])
def test_file_in_an_unwritable_directory_is_reported(tmp_path: Path, read_only: Path, key: str) -> None:
    path = daemon_file(tmp_path, f"{key}: locked/x")
    assert problems(path) == [f"{path}:2: qsupervisord.{key}: directory {read_only} is not writable"]


def test_a_reader_of_the_settings_need_not_be_able_to_write_the_daemons_files(
        tmp_path: Path, read_only: Path) -> None:
    # qsupervisorctl publish/failed run as operators who cannot write /run/qsupervisor.
    path = daemon_file(tmp_path, "socket: locked/x.sock")
    config = load_config(path, check_writable=False)
    assert config.daemon.socket == f"{read_only}/x.sock"


@pytest.mark.parametrize("key", ["socket", "pidfile", "logfile"])
def test_missing_directory_under_an_unwritable_one_is_reported(tmp_path: Path, read_only: Path, key: str) -> None:
    path = daemon_file(tmp_path, f"{key}: locked/run/x")
    assert problems(path) == [
        f"{path}:2: qsupervisord.{key}: cannot create directory {read_only}/run: {read_only} is not writable"
    ]


def test_log_dir_unwritable_or_uncreatable_is_reported(tmp_path: Path, read_only: Path) -> None:
    path = write(tmp_path / "queues.yaml", "qsupervisord:\n  log_dir: locked\nprograms: {}\n")
    assert problems(path) == [f"{path}:2: qsupervisord.log_dir: directory {read_only} is not writable"]
    path = write(tmp_path / "queues.yaml", "qsupervisord:\n  log_dir: locked/logs\nprograms: {}\n")
    assert problems(path) == [
        f"{path}:2: qsupervisord.log_dir: cannot create directory {read_only}/logs: {read_only} is not writable"
    ]


# -- the schema tables --------------------------------------------------------------------


def test_schema_tables_name_exactly_the_model_fields() -> None:
    daemon_fields = {f.name for f in dataclasses.fields(DaemonConfig)}
    program_fields = {f.name for f in dataclasses.fields(ProgramConfig)} - set(schema.PROGRAM_IMPLICIT)
    assert set(schema.DAEMON.keys) == daemon_fields
    assert set(schema.PROGRAM.keys) == program_fields


def test_nested_tables_name_exactly_their_model_fields() -> None:
    nested = [spec.section for section in (schema.DAEMON, schema.PROGRAM)
              for spec in section.keys.values() if spec.section is not None]
    assert {section.title for section in nested} == {"backoff", "delay", "fleet", "metrics",
                                                      "workers", "autoscale"}
    for section in nested:
        assert set(section.keys) == {f.name for f in dataclasses.fields(section.model)}


def test_schema_defaults_come_from_the_model() -> None:
    assert schema.DAEMON.default("log_backups") == 5
    assert schema.PROGRAM.default("prefetch") == 1
    assert schema.PROGRAM.default("queue") is None
    with pytest.raises(KeyError):
        schema.PROGRAM.default("nope")


def test_every_schema_row_has_a_description() -> None:
    for section in (schema.DAEMON, schema.PROGRAM, schema.BACKOFF, schema.DELAY):
        assert all(spec.description for spec in section.keys.values())
