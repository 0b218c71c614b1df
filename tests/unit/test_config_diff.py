from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from qsupervisor.config import (
    Backoff,
    Config,
    ConfigDiff,
    DelayConfig,
    diff_configs,
    load_config,
)

from .config_files import config, program


def test_identical_configs_give_an_empty_diff() -> None:
    old = config(program("orders"), program("emails", workers=3))
    diff = diff_configs(old, old)
    assert diff.is_empty
    assert diff == ConfigDiff()
    assert diff.describe() == []


def test_added_and_removed_programs_keep_definition_order() -> None:
    old = config(program("a"), program("b"), program("c"))
    new = config(program("d"), program("b"), program("e"))
    diff = diff_configs(old, new)
    assert (diff.added, diff.removed) == (("d", "e"), ("a", "c"))
    assert diff.describe() == ["d: added", "e: added", "a: removed", "c: removed"]
    assert not diff.is_empty


def test_only_workers_changed_is_scaled() -> None:
    diff = diff_configs(config(program("emails", workers=2)), config(program("emails", workers=4)))
    assert diff == ConfigDiff(scaled=("emails",))
    assert diff.describe() == ["emails: scaled 2 -> 4"]


def test_other_setting_changed_is_changed_with_old_and_new_values() -> None:
    diff = diff_configs(config(program("orders", max_jobs=1000)), config(program("orders", max_jobs=500)))
    assert diff == ConfigDiff(changed=("orders",))
    assert diff.describe() == ["orders: changed (max_jobs 1000 -> 500)"]


def test_workers_and_another_setting_changed_is_changed_not_scaled() -> None:
    old = config(program("orders", workers=1, prefetch=1))
    new = config(program("orders", workers=3, prefetch=10))
    diff = diff_configs(old, new)
    assert (diff.changed, diff.scaled) == (("orders",), ())
    assert diff.describe() == ["orders: changed (workers 1 -> 3, prefetch 1 -> 10)"]


def test_values_are_shown_in_config_terms() -> None:
    old = config(program("orders", preload=("app.models", "django"), stop_timeout=30.0, autostart=True))
    new = config(program("orders", preload=("app.models",), stop_timeout=2.5, autostart=False, user="root"))
    assert diff_configs(old, new).describe() == [
        "orders: changed (preload [app.models, django] -> [app.models], stop_timeout 30 -> 2.5, "
        "autostart true -> false, user none -> root)"
    ]


def test_environment_change_does_not_reveal_values() -> None:
    old = config(program("orders", environment=(("API_KEY", "old-secret"),)))
    new = config(program("orders", environment=(("API_KEY", "new-secret"),)))
    diff = diff_configs(old, new)
    assert diff.changed == ("orders",)
    assert diff.describe() == ["orders: changed (environment changed)"]


def test_broker_change_restarts_every_common_program_without_showing_the_url() -> None:
    old = config(program("orders"), program("emails", workers=2), program("gone"),
                 broker="amqp://u:old-pw@rabbit-1/")
    new = config(program("orders"), program("emails", workers=5), program("fresh"),
                 broker="amqp://u:new-pw@rabbit-2/")
    diff = diff_configs(old, new)
    assert diff == ConfigDiff(
        added=("fresh",), removed=("gone",), changed=("orders", "emails"), daemon_changed=("broker",)
    )
    lines = diff.describe()
    assert lines == [
        "fresh: added",
        "gone: removed",
        "orders: changed (broker changed)",
        "emails: changed (workers 2 -> 5, broker changed)",
        "qsupervisord: changed (broker changed)",
    ]
    assert "pw" not in "\n".join(lines)


def test_daemon_changes_list_field_names_in_model_order() -> None:
    old = config(program("orders"))
    new = config(program("orders"), log_backups=3, socket_mode=0o660)
    diff = diff_configs(old, new)
    assert diff == ConfigDiff(daemon_changed=("socket_mode", "log_backups"))
    assert diff.describe() == [
        "qsupervisord: changed (socket_mode 0600 -> 0660, log_backups 5 -> 3)"
    ]


def test_settings_leaders_inherit_roll_every_program() -> None:
    old = config(program("orders"), program("emails"))
    new = config(program("orders"), program("emails"), log_level="debug", path=("/srv/app",))
    diff = diff_configs(old, new)
    assert diff.changed == ("orders", "emails")
    assert diff.daemon_changed == ("log_level", "path")


def test_moving_a_program_to_another_file_is_not_a_change() -> None:
    old = config(program("orders", source="queues.yaml:3"))
    new = config(program("orders", source="conf.d/orders.yaml:2"))
    assert diff_configs(old, new).is_empty


def test_changed_and_scaled_follow_the_new_files_order() -> None:
    old = config(program("a", workers=1), program("b", workers=1), program("c", max_jobs=1))
    new = config(program("c", max_jobs=2), program("b", workers=2), program("a", workers=2))
    diff = diff_configs(old, new)
    assert (diff.changed, diff.scaled) == (("c",), ("b", "a"))


def test_diffs_compare_by_names_only_and_describe_without_details() -> None:
    built = ConfigDiff(changed=("orders",), scaled=("emails",), daemon_changed=("log_backups",))
    computed = diff_configs(
        config(program("orders", max_jobs=1), program("emails"), log_backups=5),
        config(program("orders", max_jobs=2), program("emails", workers=2), log_backups=3),
    )
    assert built == computed
    assert built.describe() == ["orders: changed", "emails: scaled", "qsupervisord: changed (log_backups)"]
    assert hash(built) == hash(computed)


def test_diff_of_two_loaded_files(tmp_path: Path) -> None:
    def load(text: str) -> Config:
        path = tmp_path / "queues.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return load_config(str(path))

    old = load("""
        programs:
          orders: {handler: "app.jobs:handle", max_jobs: 1000}
          emails: {handler: "app.mail:send", workers: 2}
          old: {handler: "app.old:run"}
        """)
    new = load("""
        programs:
          orders: {handler: "app.jobs:handle", max_jobs: 500}
          emails: {handler: "app.mail:send", workers: 4}
          reports: {handler: "app.reports:build"}
        """)
    assert diff_configs(old, new).describe() == [
        "reports: added",
        "old: removed",
        "orders: changed (max_jobs 1000 -> 500)",
        "emails: scaled 2 -> 4",
    ]


def test_settings_without_workers_is_what_decides_scaled() -> None:
    a = program("emails", workers=2)
    b = dataclasses.replace(a, workers=7)
    assert a != b and a.settings_without_workers() == b.settings_without_workers()


# -- worker-runtime settings (issue #3) ---------------------------------------------------


def test_a_new_delay_resolution_rolls_every_program() -> None:
    old = config(program("orders"), program("emails"))
    new = config(program("orders"), program("emails"), delay=DelayConfig(resolution=1.0))
    diff = diff_configs(old, new)
    assert diff == ConfigDiff(changed=("orders", "emails"), daemon_changed=("delay",))
    assert diff.describe() == [
        "orders: changed (delay.resolution 0.1 -> 1)",
        "emails: changed (delay.resolution 0.1 -> 1)",
        "qsupervisord: changed (delay.resolution 0.1 -> 1)",
    ]


def test_inherited_settings_are_explained_with_the_daemons_values() -> None:
    old = config(program("orders", max_jobs=1))
    new = config(program("orders", max_jobs=2), log_level="debug")
    assert diff_configs(old, new).describe() == [
        "orders: changed (max_jobs 1 -> 2, log_level info -> debug)",
        "qsupervisord: changed (log_level info -> debug)",
    ]


def test_a_new_consumer_timeout_changes_only_the_daemon_section() -> None:
    diff = diff_configs(config(program("orders")), config(program("orders"), consumer_timeout=3600.0))
    assert diff == ConfigDiff(daemon_changed=("consumer_timeout",))
    assert diff.describe() == ["qsupervisord: changed (consumer_timeout 1800 -> 3600)"]


@pytest.mark.parametrize(
    "before, after, detail",
    [
        ({}, {"timeout": 60.0}, "timeout 0 -> 60"),
        ({"attempts": 5}, {"attempts": 3}, "attempts 5 -> 3"),
        ({}, {"backoff": Backoff(factor=3.0, jitter=0.0)}, "backoff.factor 2 -> 3, backoff.jitter 0.2 -> 0"),
        ({}, {"queue_type": "classic"}, "queue_type quorum -> classic"),
        ({}, {"format": "raw"}, "format json -> raw"),
        ({}, {"max_memory": 1024}, "max_memory 0 -> 1024"),
        ({}, {"max_age": 21600.0}, "max_age 0 -> 21600"),
        ({"dead_letter_queue": "orders.failed"}, {"dead_letter_queue": "orders.dead"},
         "dead_letter_queue orders.failed -> orders.dead"),
        ({"delay_exchange": "orders.delay"}, {"delay_exchange": "later"}, "delay_exchange orders.delay -> later"),
    ],
)
def test_runtime_program_settings_change_the_program(
    before: dict[str, Any], after: dict[str, Any], detail: str
) -> None:
    diff = diff_configs(config(program("orders", **before)), config(program("orders", **after)))
    assert diff == ConfigDiff(changed=("orders",))
    assert diff.describe() == [f"orders: changed ({detail})"]


def test_workers_and_timeout_changed_is_changed_not_scaled() -> None:
    old = config(program("orders", workers=1))
    new = config(program("orders", workers=2, timeout=30.0))
    assert diff_configs(old, new) == ConfigDiff(changed=("orders",))


def test_diff_of_two_loaded_files_with_runtime_settings(tmp_path: Path) -> None:
    def load(text: str) -> Config:
        path = tmp_path / "queues.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return load_config(str(path))

    old = load("""
        programs:
          orders: {handler: "app.jobs:handle", timeout: 1m}
          emails: {handler: "app.mail:send", workers: 1}
        """)
    new = load("""
        qsupervisord:
          delay: {resolution: 100ms}
          consumer_timeout: 30m
        programs:
          orders: {handler: "app.jobs:handle", timeout: 2m}
          emails: {handler: "app.mail:send", workers: 2}
        """)
    # An explicit resolution equal to the default is no change; emails only scaled.
    assert diff_configs(old, new).describe() == ["orders: changed (timeout 60 -> 120)", "emails: scaled 1 -> 2"]
