from __future__ import annotations

from pathlib import Path

import pytest

from qsupervisor.config import (
    ConfigError,
    DaemonConfig,
    load_config,
    loader,
    read_control_settings,
)

from .config_files import daemon_file, problems, write

# -- includes ---------------------------------------------------------------------------


def test_program_defined_in_main_file_and_include_names_both_places(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          include: [conf.d/*.yaml]
        programs:
          orders: {handler: "a:b"}
        """)
    included = write(tmp_path / "conf.d" / "orders.yaml", "# again\nprograms:\n  orders: {handler: 'a:c'}\n")
    assert problems(path) == [f"{included}:3: programs.orders: program 'orders' is already defined at {path}:4"]

def test_program_defined_in_two_includes_names_both_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "queues.yaml", "qsupervisord:\n  include: [conf.d/*.yaml]\n")
    write(tmp_path / "conf.d" / "a.yaml", "programs:\n  emails: {handler: 'a:b'}\n")
    write(tmp_path / "conf.d" / "b.yaml", "programs:\n\n  emails: {handler: 'a:b'}\n")
    monkeypatch.chdir(tmp_path)
    # Included files are named relative to where the user stands, like the main file.
    assert problems("queues.yaml") == [
        "conf.d/b.yaml:3: programs.emails: program 'emails' is already defined at conf.d/a.yaml:2"
    ]

def test_absolute_include_pattern_shows_absolute_paths(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, f"include: ['{tmp_path}/more/*.yaml']")
    included = write(tmp_path / "more" / "x.yaml", "programs:\n  x: {workers: 1}\n")
    assert problems(path) == [f"{included}:2: programs.x: missing required key 'handler' (a Python callable, 'module:callable') or 'command' (a program run for each job)"]

def test_included_file_may_only_hold_programs(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "include: [extra.yaml]")
    included = write(tmp_path / "extra.yaml", """
        qsupervisord:
          log_level: debug
        programs: {}
        progams: {}
        """)
    assert problems(path) == [
        f"{included}:1: qsupervisord: unknown key (an included file may only hold 'programs')",
        f"{included}:4: progams: unknown key; did you mean 'programs'?",
    ]

def test_included_file_that_is_not_a_mapping_is_reported(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "include: [extra.yaml]")
    included = write(tmp_path / "extra.yaml", "just text\n")
    assert problems(path) == [f"{included}:1: expected a mapping with the keys 'programs', got 'just text'"]

def test_yaml_syntax_error_in_an_include_is_reported_and_others_still_checked(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "include: [conf.d/*.yaml]")
    broken = write(tmp_path / "conf.d" / "a.yaml", "programs:\n  x: {handler: 'a:b'\n")
    other = write(tmp_path / "conf.d" / "b.yaml", "programs:\n  y: {workers: -1, handler: 'a:b'}\n")
    assert problems(path) == [
        f"{broken}:2:6: YAML syntax error: this '{{' is never closed (the parser reached the "
        "end of the file still inside it)",
        f"{other}:2: programs.y.workers: expected an integer >= 0, got -1",
    ]

def test_literal_include_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          include:
            - missing.yaml
            - adir
        """)
    assert problems(path) == [
        f"{path}:3: qsupervisord.include[0]: included file {tmp_path}/missing.yaml does not exist",
        f"{path}:4: qsupervisord.include[1]: included file {tmp_path}/adir is not a file",
    ]

def test_file_matched_by_two_include_globs_is_read_once(tmp_path: Path) -> None:
    path = daemon_file(tmp_path, "include: [conf.d/*.yaml, conf.d/a.yaml]")
    write(tmp_path / "conf.d" / "a.yaml", "programs:\n  x: {handler: 'a:b'}\n")
    assert list(load_config(path).programs) == ["x"]

def test_unreadable_include_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = daemon_file(tmp_path, "include: ['conf.d/*.yaml']")
    target = write(tmp_path / "conf.d" / "a.yaml", "programs: {}\n")
    real_open = open

    # File modes do not stop root, so make the read fail the way it would for a user.
    def fake_open(name: str, *args: object, **kwargs: object) -> object:
        if name == target:
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(loader, "open", fake_open, raising=False)
    assert problems(path) == [f"{target}: cannot read the file: Permission denied"]

# -- read_control_settings ----------------------------------------------------------------

def test_control_settings_resolve_a_relative_socket(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          socket: run/ctl.sock
          broker: amqp://u:p@rabbit/
        """)
    assert read_control_settings(path) == (f"{tmp_path}/run/ctl.sock", ("amqp://u:p@rabbit/",))


def test_control_settings_read_the_nodes_of_a_cluster(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          broker: [amqp://u:p@rabbit-1/, amqp://u:p@rabbit-2/]
        """)
    assert read_control_settings(path)[1] == ("amqp://u:p@rabbit-1/", "amqp://u:p@rabbit-2/")

@pytest.mark.parametrize(
    "text",
    [
        "",
        "programs: {}\n",
        "qsupervisord: [1]\n",
        "qsupervisord: {socket: 5, broker: [x]}\n",
        "qsupervisord: {socket: '', broker: ''}\n",
        "qsupervisord: {socket: [\n",
        "- a list\n",
    ],
)
def test_control_settings_fall_back_to_defaults_for_anything_broken(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "queues.yaml", text)
    defaults = DaemonConfig()
    assert read_control_settings(path) == (defaults.socket, defaults.broker)

def test_control_settings_use_the_socket_even_when_other_keys_are_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          socket: /x/ctl.sock
          workers: many
        programs:
          orders: 5
        """)
    assert read_control_settings(path) == ("/x/ctl.sock", DaemonConfig().broker)

def test_control_settings_tolerate_non_utf8_and_directories(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    defaults = (DaemonConfig().socket, DaemonConfig().broker)
    assert read_control_settings(str(bad)) == defaults
    assert read_control_settings(str(tmp_path)) == defaults

def test_control_settings_raise_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_control_settings(str(tmp_path / "missing.yaml"))


# -- the texts a re-exec hands over --------------------------------------------------------


def test_config_keeps_every_file_read_and_loads_again_from_those_texts_alone(
        tmp_path: Path) -> None:
    """A re-exec parses the configuration that was applied: an edit not applied yet, and a
    file added to conf.d since, stay out of it."""
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          include: [conf.d/*.yaml]
        programs:
          orders: {handler: "a:b", workers: 2}
        """)
    write(tmp_path / "conf.d" / "emails.yaml", "programs:\n  emails: {handler: 'a:c'}\n")
    applied = load_config(str(path))
    assert list(applied.texts) == [str(path), str(tmp_path / "conf.d" / "emails.yaml")]

    write(tmp_path / "queues.yaml", "programs:\n  orders: {handler: 'x:y', workers: 9}\n")
    write(tmp_path / "conf.d" / "later.yaml", "programs:\n  later: {handler: 'a:d'}\n")
    again = load_config(str(path), texts=applied.texts)
    assert again == applied
    assert list(again.programs) == ["orders", "emails"]
    assert again.programs["orders"].workers == 2


def test_a_file_missing_from_the_handed_over_texts_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n  orders: {handler: 'a:b'}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), texts={})
    assert [str(p) for p in raised.value.problems] == [
        f"{path}: not in the handed-over texts"]
