"""The `command:` key: an argv list or a string split as a shell would, placeholders
checked when the file is loaded, exactly one of handler and command, and the format a
command gets by default."""

from __future__ import annotations

from pathlib import Path

from qsupervisor.config import load_config

from .config_files import problems, write


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return load_config(str(write(tmp_path / "queues.yaml", "programs:\n" + text)),
                       check_writable=False)


def test_a_command_list_is_kept_as_argv(tmp_path: Path) -> None:
    config = load(tmp_path, "  orders:\n    command: [php, yii, queue/exec, '{message_id}', "
                            "'{timeout}', '{attempt}', '{worker_pid}', 30]\n")
    program = config.programs["orders"]
    assert program.command == ("php", "yii", "queue/exec", "{message_id}", "{timeout}",
                               "{attempt}", "{worker_pid}", "30")
    assert program.handler == ""


def test_a_command_string_is_split_as_a_shell_would_without_running_one(tmp_path: Path) -> None:
    config = load(tmp_path, "  orders:\n    command: >-\n      php -d 'memory_limit=512M' "
                            "yii \"queue/exec\" {message_id} $HOME | x\n")
    assert config.programs["orders"].command == (
        "php", "-d", "memory_limit=512M", "yii", "queue/exec", "{message_id}", "$HOME", "|", "x")


def test_a_command_gets_the_raw_body_unless_the_format_is_set(tmp_path: Path) -> None:
    config = load(tmp_path, "  raw:\n    command: cat\n"
                            "  checked:\n    command: cat\n    format: json\n"
                            "  python:\n    handler: app:run\n")
    assert [config.programs[n].format for n in ("raw", "checked", "python")] == \
        ["raw", "json", "json"]


def test_handler_and_command_together_or_neither_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n  a:\n    handler: app:run\n"
                                           "    command: cat\n  b:\n    workers: 2\n")
    assert problems(path) == [
        f"{path}:4: programs.a.command: set either handler (a Python callable) or command "
        "(a program run for each job), not both",
        f"{path}:5: programs.b: missing required key 'handler' (a Python callable, "
        "'module:callable') or 'command' (a program run for each job)",
    ]


def test_bad_commands_are_named_with_their_line_and_item(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", "programs:\n"
                 "  a:\n    command: [php, '{mesage_id}']\n"
                 "  b:\n    command: \"php 'unclosed\"\n"
                 "  c:\n    command: []\n"
                 "  d:\n    command: [php, {a: 1}]\n"
                 "  e:\n    command: php --id={nope}\n"
                 "  f:\n    command: ['{program}', x]\n"
                 "  g:\n    command: 42\n")
    assert problems(path) == [
        f"{path}:3: programs.a.command[1]: unknown placeholder {{mesage_id}}; did you mean "
        "{message_id}?",
        f"{path}:5: programs.b.command: cannot split \"php 'unclosed\" into arguments: "
        "No closing quotation",
        f"{path}:7: programs.c.command: expected the program to run and its arguments, such as "
        "[php, yii, queue/exec, '{message_id}', '{timeout}', '{attempt}', '{worker_pid}']",
        f"{path}:9: programs.d.command[1]: expected a string, got a mapping",
        f"{path}:11: programs.e.command: argument 1 ('--id={{nope}}'): unknown placeholder "
        "{nope} (known: {message_id}, {attempt}, {attempts}, {timeout}, {program}, {queue}, "
        "{worker_pid}, {redelivered}; write {{nope}} for the text {nope})",
        f"{path}:13: programs.f.command[0]: the program to run (the first argument) cannot be "
        "a placeholder",
        f"{path}:15: programs.g.command: expected a list of arguments such as [php, yii, "
        "queue/exec, '{message_id}', '{timeout}', '{attempt}', '{worker_pid}'], or one "
        "string, got 42",
    ]


def test_braces_that_are_not_placeholders_are_literal(tmp_path: Path) -> None:
    config = load(tmp_path, "  a:\n    command: [sh, -c, 'f() { echo {{attempt}}; }; f {attempt}']\n")
    assert config.programs["a"].command[2] == "f() { echo {{attempt}}; }; f {attempt}"
