from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qsupervisor.config import (
    Backoff,
    Config,
    ConfigError,
    DaemonConfig,
    DelayConfig,
    Problem,
    ProgramConfig,
    load_config,
)

from .config_files import daemon_file, problems, program_file, write

MISSING_USER = "qsv-no-such-user"


# -- valid files -----------------------------------------------------------------------


# An empty or truncated file must never be read as "no programs": applied by update or
# SIGHUP it would stop every program. Before, an empty file loaded as defaults and no
# programs (a test locked that in); now "none" has to be written out.
@pytest.mark.parametrize("text", ["", "\n\n", "# nothing configured yet\n"])
def test_an_empty_or_comment_only_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = str(tmp_path / "queues.yaml")
    Path(path).write_text(text)
    assert problems(path) == [f"{path}: the file is empty (or holds only comments): a "
                              "truncated file? write 'programs: {}' for no programs"]


def test_a_file_without_programs_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          log_level: info
        """)
    assert problems(path) == [f"{path}:1: no 'programs' key: write 'programs: {{}}' for no programs"]
    path = write(tmp_path / "queues.yaml", """
        # truncated after the key
        programs:
        """)
    assert problems(path) == [
        f"{path}:2: programs: 'programs' has no value: write 'programs: {{}}' for no programs"]


def test_programs_written_out_as_none_and_null_daemon_section_load(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        # nothing configured yet
        qsupervisord:
        programs: {}
        """)
    config = load_config(path)
    assert config == Config(path=path, daemon=DaemonConfig(), programs={})


def test_a_main_file_may_leave_its_programs_to_includes(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          include: [conf.d/*.yaml]
        """)
    assert load_config(path).programs == {}  # an empty conf.d
    write(tmp_path / "conf.d" / "a.yaml", "# emptied by a failed deploy\n")
    assert problems(path) == [f"{tmp_path / 'conf.d' / 'a.yaml'}: the file is empty (or holds "
                              "only comments): a truncated file? write 'programs: {}' for no "
                              "programs"]


def test_minimal_program_gets_defaults_queue_named_after_it_and_source(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
        """)
    program = load_config(path).programs["orders"]
    assert program == ProgramConfig(
        name="orders", handler="app.jobs:handle", queue="orders",
        delay_exchange="orders.delay", dead_letter_queue="orders.failed",
    )
    assert program.source == f"{path}:2"


def test_broker_takes_the_nodes_of_a_cluster(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          broker:
            - amqp://u:p@rabbit-1:5672/shop
            - amqp://u:p@rabbit-2:5672/shop
            - amqps://u:p@rabbit-3:5671/shop
        programs:
          orders: {handler: "shop.jobs:orders"}
        """)
    assert load_config(path).daemon.broker == (
        "amqp://u:p@rabbit-1:5672/shop", "amqp://u:p@rabbit-2:5672/shop",
        "amqps://u:p@rabbit-3:5671/shop")


def test_every_key_is_parsed_into_the_model(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    path = write(tmp_path / "queues.yaml", f"""
        qsupervisord:
          broker: amqps://u:p@rabbit:5671/prod
          socket: {tmp_path}/run/ctl.sock
          socket_mode: "0660"
          allow_users: [root]
          allow_groups: [root]
          pidfile: {tmp_path}/run/qsupervisord.pid
          logfile: {tmp_path}/log/qsupervisord.log
          log_dir: {tmp_path}/log
          log_format: json
          log_level: debug
          log_max_size: 10MiB
          log_backups: 0
          path: [{tmp_path}/app]
          include: []
          delay: {{resolution: 1s}}
          consumer_timeout: 1h
        programs:
          orders:
            handler: app.jobs:Handler.run
            queue: orders.v2
            workers: 0
            preload: [app.models, django]
            max_jobs: 1000
            max_jobs_jitter: 50
            prefetch: 65535
            stop_timeout: 1m30s
            start_retries: 1
            autostart: false
            environment:
              ZED: last
              ALPHA: 1
            directory: {tmp_path}/app
            user: root
            group: root
            timeout: 2m
            attempts: 3
            backoff: {{initial: 500ms, factor: 3, max: 10m, jitter: 0}}
            delay_exchange: orders.later
            dead_letter_queue: orders.dead
            queue_type: classic
            format: raw
            max_memory: 512MiB
            max_age: 6h
        """)
    config = load_config(path)
    assert config.daemon == DaemonConfig(
        broker=("amqps://u:p@rabbit:5671/prod",),
        socket=f"{tmp_path}/run/ctl.sock",
        socket_mode=0o660,
        allow_users=("root",),
        allow_groups=("root",),
        pidfile=f"{tmp_path}/run/qsupervisord.pid",
        logfile=f"{tmp_path}/log/qsupervisord.log",
        log_dir=f"{tmp_path}/log",
        log_format="json",
        log_level="debug",
        log_max_size=10 * 1024 * 1024,
        log_backups=0,
        path=(f"{tmp_path}/app",),
        include=(),
        delay=DelayConfig(resolution=1.0),
        consumer_timeout=3600.0,
    )
    assert config.programs["orders"] == ProgramConfig(
        name="orders",
        handler="app.jobs:Handler.run",
        queue="orders.v2",
        workers=0,
        preload=("app.models", "django"),
        max_jobs=1000,
        max_jobs_jitter=50,
        prefetch=65535,
        stop_timeout=90.0,
        start_retries=1,
        autostart=False,
        environment=(("ALPHA", "1"), ("ZED", "last")),
        directory=f"{tmp_path}/app",
        user="root",
        group="root",
        timeout=120.0,
        attempts=3,
        backoff=Backoff(initial=0.5, factor=3.0, max=600.0, jitter=0.0),
        delay_exchange="orders.later",
        dead_letter_queue="orders.dead",
        queue_type="classic",
        format="raw",
        max_memory=512 * 1024 * 1024,
        max_age=6 * 3600.0,
    )


def test_checking_paths_creates_nothing(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "socket: deep/er/ctl.sock")
    assert load_config(path).daemon.socket == f"{tmp_path}/deep/er/ctl.sock"
    assert not (tmp_path / "deep").exists()


def test_relative_paths_resolve_against_the_config_directory_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "app").mkdir(parents=True)
    (conf / "work").mkdir()
    write(conf / "queues.yaml", """
        qsupervisord:
          socket: run/ctl.sock
          pidfile: ./run/d.pid
          logfile: log/d.log
          log_dir: ../logs
          path: [app, .]
          include: [more/*.yaml]
        programs:
          orders:
            handler: app.jobs:handle
            directory: work
        """)
    write(conf / "more" / "emails.yaml", """
        programs:
          emails:
            handler: app.mail:send
            directory: ../work
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../conf/queues.yaml")
    assert config.path == str(conf / "queues.yaml")
    assert config.daemon.socket == str(conf / "run" / "ctl.sock")
    assert config.daemon.pidfile == str(conf / "run" / "d.pid")
    assert config.daemon.logfile == str(conf / "log" / "d.log")
    assert config.daemon.log_dir == str(tmp_path / "logs")
    assert config.daemon.path == (str(conf / "app"), str(conf))
    assert config.daemon.include == ("more/*.yaml",)  # kept as written
    assert config.programs["orders"].directory == str(conf / "work")
    # Paths in an included file are relative to that file's own directory.
    assert config.programs["emails"].directory == str(conf / "work")


def test_logfile_dash_means_stderr_and_is_kept(tmp_path: Path) -> None:
    assert load_config(daemon_file(tmp_path, 'logfile: "-"')).daemon.logfile == "-"


@pytest.mark.parametrize(
    "written, mode",
    [('"0600"', 0o600), ('"660"', 0o660), ("'0o640'", 0o640), ("0640", 0o640), ("0o644", 0o644), ('"0"', 0)],
)
def test_socket_mode_accepts_octal_text_and_yaml_octal_ints(tmp_path: Path, written: str, mode: int) -> None:
    assert load_config(daemon_file(tmp_path, f"socket_mode: {written}")).daemon.socket_mode == mode


@pytest.mark.parametrize("name", ["123", "on", "a.b-c_1", "Orders"])
def test_program_names_stay_strings_as_typed(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "queues.yaml", f"""
        programs:
          {name}:
            handler: app:run
        """)
    program = load_config(path).programs[name]
    assert (program.name, program.queue) == (name, name)


def test_environment_values_keep_their_written_text(tmp_path: Path) -> None:
    path = program_file(tmp_path, "environment: {V: 1.10, FLAG: true, EMPTY: , OCT: 0755, S: ' x '}")
    assert load_config(path).programs["orders"].environment == (
        ("EMPTY", ""), ("FLAG", "true"), ("OCT", "0755"), ("S", " x "), ("V", "1.10"),
    )


def test_programs_keep_definition_order_across_includes(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          include: [conf.d/*.yaml]
        programs:
          zeta: {handler: "a:b"}
          alpha: {handler: "a:b"}
        """)
    write(tmp_path / "conf.d" / "b.yaml", "programs: {beta: {handler: 'a:b'}}\n")
    write(tmp_path / "conf.d" / "a.yaml", "programs: {gamma: {handler: 'a:b'}}\n")
    assert list(load_config(path).programs) == ["zeta", "alpha", "gamma", "beta"]


def test_yaml_merge_keys_share_settings_between_programs(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders: &base
            handler: app.jobs:handle
            prefetch: 10
          refunds:
            <<: *base
            prefetch: 20
        """)
    refunds = load_config(path).programs["refunds"]
    assert (refunds.handler, refunds.prefetch, refunds.queue) == ("app.jobs:handle", 20, "refunds")


def test_include_glob_matching_nothing_is_fine(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "include: [conf.d/*.yaml]")
    assert load_config(path).programs == {}


def test_include_glob_matching_the_main_file_skips_it(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          include: ["*.yaml", other.yaml]
        programs:
          orders: {handler: "a:b"}
        """)
    write(tmp_path / "other.yaml", "programs: {emails: {handler: 'a:b'}}\n")
    assert list(load_config(path).programs) == ["orders", "emails"]


def test_program_source_is_not_compared(tmp_path: Path) -> None:
    a = ProgramConfig(name="x", handler="a:b", queue="x", source="a.yaml:1")
    assert a == dataclasses.replace(a, source="b.yaml:9")


def test_settings_without_workers_zeroes_only_workers() -> None:
    program = ProgramConfig(name="x", handler="a:b", queue="x", workers=4, max_jobs=7)
    assert program.settings_without_workers() == dataclasses.replace(program, workers=0)


# -- problems: file level ---------------------------------------------------------------


def test_missing_file_is_a_config_error_without_line(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    assert problems(path) == [f"{path}: cannot read the file: No such file or directory"]


# Syntax errors are named where a person would point: the parser notices most of them a
# line or more later (these tests used to lock in the parser's line, e.g. line 5 for a '['
# left open on line 4, or a line past the end of the file).
SYNTAX_CASES = {
    "an unclosed bracket, at the end of the file": (
        "programs:\n  orders:\n    handler: app:run\n    workers: [1, 2\n",
        "4:14: YAML syntax error: this '[' is never closed (the parser reached the end of the "
        "file still inside it)"),
    "an unclosed bracket, before more keys": (
        "programs:\n  orders:\n    handler: a:b\n    preload: [app.models, app.db\n"
        "    workers: 2\n",
        "4:14: YAML syntax error: this '[' is never closed (the parser reached line 5 still "
        "inside it)"),
    "an unclosed quote": (
        "programs:\n  orders:\n    handler: \"a:b\n    workers: 2\n",
        "3:14: YAML syntax error: this quote is never closed (the parser reached the end of "
        "the file still inside it)"),
    "a tab": (
        "programs:\n  orders:\n\thandler: a:b\n",
        "3:1: YAML syntax error: a tab in the indentation (YAML indents with spaces only)"),
    "a key indented too deep": (
        "programs:\n  orders:\n    handler: a:b\n      workers: 2\n",
        "4:7: YAML syntax error: a key indented deeper than the one above it (or a plain "
        "value holding ': '; quote such a value)"),
    "a key indented to no level": (
        "programs:\n  orders:\n    handler: a:b\n   workers: 2\n",
        "4:4: YAML syntax error: this line is indented to no level above it (line it up with "
        "a key above)"),
    "a missing colon": (
        "programs:\n  orders:\n    handler a:b\n    workers: 2\n",
        "3:5: YAML syntax error: no ':' after the key on this line (line 4 then reads as part "
        "of its value)"),
    "a second document": (
        "programs: {}\n---\nprograms: {}\n",
        "2:1: YAML syntax error: expected a single document in the stream, but found another "
        "document"),
}


@pytest.mark.parametrize("case", sorted(SYNTAX_CASES))
def test_a_yaml_syntax_error_names_the_line_and_column_of_the_mistake(
        tmp_path: Path, case: str) -> None:
    text, where_and_what = SYNTAX_CASES[case]
    path = str(tmp_path / "queues.yaml")
    Path(path).write_text(text)
    assert problems(path) == [f"{path}:{where_and_what}"]


def test_control_character_is_a_syntax_error_on_its_line(tmp_path: Path) -> None:
    path = str(tmp_path / "queues.yaml")
    Path(path).write_text("programs:\n  orders: \x07\n")
    assert problems(path) == [f"{path}:2: YAML syntax error: unacceptable character #x0007"]


def test_non_utf8_file_reports_the_line(tmp_path: Path) -> None:
    path = str(tmp_path / "queues.yaml")
    Path(path).write_bytes(b"programs:\n  caf\xe9: {handler: 'a:b'}\n")
    assert problems(path) == [f"{path}:2: the file is not valid UTF-8"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "- orders\n")
    assert problems(path) == [
        f"{path}:1: expected a mapping with the keys 'qsupervisord', 'programs', got a list"
    ]


def test_unknown_top_level_key_hints_the_close_one(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "program: {}\norders: {}\n")
    assert problems(path) == [
        f"{path}:1: program: unknown key; did you mean 'programs'?",
        f"{path}:2: orders: unknown key (expected 'qsupervisord' or 'programs')",
    ]


def test_relative_main_file_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf" / "queues.yaml", "programs:\n  orders:\n    workers: four\n")
    monkeypatch.chdir(tmp_path)
    assert problems("conf/queues.yaml") == [
        "conf/queues.yaml:2: programs.orders: missing required key 'handler' (a Python callable, 'module:callable') or 'command' (a program run for each job)",
        "conf/queues.yaml:3: programs.orders.workers: expected an integer >= 0, got 'four'",
    ]


def test_duplicate_key_in_one_mapping_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app:run
            workers: 2
            workers: 3
        """)
    assert problems(path) == [f"{path}:5: programs.orders.workers: duplicate key (first defined at line 4)"]


def test_duplicate_program_in_one_file_is_reported_once(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders: {handler: "a:b"}
          orders: {handler: "a:c"}
        """)
    assert problems(path) == [f"{path}:3: programs.orders: duplicate key (first defined at line 2)"]


def test_unsupported_yaml_tag_is_reported(tmp_path: Path) -> None:
    path = program_file(tmp_path, "queue: !env QUEUE")
    assert problems(path) == [
        f"{path}:4: programs.orders.queue: could not determine a constructor for the tag '!env'"
    ]


def test_unconvertible_values_are_reported_once_not_again_as_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs: !!set {a}
        qsupervisord:
          path: [!!int abc]
          log_backups: 2024-13-45
        """)
    assert problems(path) == [
        f"{path}:1: programs: unsupported YAML tag !!set",
        f"{path}:3: qsupervisord.path[0]: cannot read 'abc' as !!int",
        f"{path}:4: qsupervisord.log_backups: cannot read '2024-13-45' as !!timestamp",
    ]


def test_an_unconvertible_value_does_not_hide_problems_around_it(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          log_level: loud
        programs:
          orders:
            handler: a:b
            environment: {WHEN: 2024-13-45}
            workers: -2
          emails:
            handler: nope
        """)
    assert problems(path) == [
        f"{path}:2: qsupervisord.log_level: expected one of debug, info, warning, error, got 'loud'",
        f"{path}:6: programs.orders.environment.WHEN: cannot read '2024-13-45' as !!timestamp",
        f"{path}:7: programs.orders.workers: expected an integer >= 0, got -2",
        f"{path}:9: programs.emails.handler: expected 'module:callable' such as "
        "'myapp.jobs:send_email', got 'nope'",
    ]


def test_recursive_alias_is_reported_once(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders: &loop
            handler: a:b
            environment: *loop
        """)
    assert problems(path) == [f"{path}:4: programs.orders.environment: recursive YAML alias"]


def test_several_errors_are_all_reported_once_each_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", f"""
        qsupervisord:
          log_levle: debug
          socket_mode: 660
          allow_users: [root, {MISSING_USER}]
        programs:
          orders:
            handler: app.jobs.handle
            workers: four
            worker: 2
          emails:
            prefetch: 0
          "bad name":
            handler: app:run
        """)
    assert problems(path) == [
        f"{path}:2: qsupervisord.log_levle: unknown key; did you mean 'log_level'?",
        f"{path}:3: qsupervisord.socket_mode: expected an octal file mode such as '0600' (quote it); "
        "unquoted 660 is read as the decimal number 660",
        f"{path}:4: qsupervisord.allow_users[1]: no such user {MISSING_USER!r}",
        f"{path}:7: programs.orders.handler: expected 'module:callable' such as "
        "'myapp.jobs:send_email', got 'app.jobs.handle'",
        f"{path}:8: programs.orders.workers: expected an integer >= 0, got 'four'",
        f"{path}:9: programs.orders.worker: unknown key; did you mean 'workers'?",
        f"{path}:10: programs.emails: missing required key 'handler' (a Python callable, 'module:callable') or 'command' (a program run for each job)",
        f"{path}:11: programs.emails.prefetch: expected an integer between 1 and 65535, got 0",
        f"{path}:12: programs.bad name: invalid program name 'bad name': use letters, digits, "
        "'_', '.' and '-', starting with a letter or digit",
    ]


def test_config_error_str_joins_problems_by_line(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n  a: 1\n  b: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:2: programs.a: expected a mapping of settings, got 1\n"
        f"{path}:3: programs.b: expected a mapping of settings, got 2"
    )


def test_problem_str_omits_unknown_line_and_empty_key() -> None:
    assert str(Problem("q.yaml", 14, "programs.orders.workers", "bad")) == "q.yaml:14: programs.orders.workers: bad"
    assert str(Problem("q.yaml", None, "programs", "bad")) == "q.yaml: programs: bad"
    assert str(Problem("q.yaml", 3, "", "bad")) == "q.yaml:3: bad"
    assert str(Problem("q.yaml", None, "", "bad")) == "q.yaml: bad"
