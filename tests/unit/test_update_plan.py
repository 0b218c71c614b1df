"""`update` as a plan (master/reconfigure.py): what the master will do for an edited file,
decided without a master."""

from __future__ import annotations

import pytest

from qsupervisor.config.model import Binding
from qsupervisor.master.reconfigure import UnknownPrograms, plan_update

from .config_files import config, program

OLD = config(program("orders", workers=2), program("emails"), program("legacy"))
NEW = config(program("orders", workers=4), program("emails", max_jobs=500),
             program("reports"), socket_mode=0o660)


def test_a_full_update_adds_removes_rolls_and_scales_only_what_changed() -> None:
    # (socket_mode is not inherited by the programs: it rolls none of them.)
    plan = plan_update(OLD, NEW, None)
    assert (plan.removed, plan.added, plan.changed, plan.scaled) == (
        ("legacy",), ("reports",), ("emails",), ("orders",))
    assert plan.config is NEW
    assert plan.daemon == NEW.daemon
    assert set(plan.result.touched) == {"legacy", "reports", "emails", "orders"}
    assert "orders: scaled 2 -> 4" in plan.result.changes
    assert any(line.startswith("qsupervisord: changed") for line in plan.result.changes)


def test_a_daemon_setting_the_programs_inherit_rolls_every_program() -> None:
    plan = plan_update(OLD, config(*OLD.programs.values(), log_level="debug"), None)
    assert plan.changed == ("orders", "emails", "legacy") and plan.scaled == ()


def test_an_unchanged_file_plans_nothing() -> None:
    plan = plan_update(OLD, OLD, None)
    assert (plan.removed, plan.added, plan.changed, plan.scaled) == ((), (), (), ())
    assert plan.result.touched == () and plan.result.changes == ()


def test_update_name_touches_that_program_only_and_keeps_the_daemon_section() -> None:
    plan = plan_update(OLD, NEW, ["orders"])
    assert (plan.removed, plan.added, plan.changed, plan.scaled) == ((), (), (), ("orders",))
    assert plan.daemon is None  # the daemon section changes with a full update only
    assert plan.config.daemon == OLD.daemon
    # The others keep their old settings, so a later full update still sees their changes.
    assert plan.config.programs["emails"] == OLD.programs["emails"]
    assert "legacy" in plan.config.programs and "reports" not in plan.config.programs
    assert plan.config.programs["orders"] == NEW.programs["orders"]
    assert plan.result.changes == ("orders: scaled 2 -> 4",)


def test_update_name_of_a_removed_or_a_new_program_removes_or_adds_it() -> None:
    plan = plan_update(OLD, NEW, ["legacy", "reports"])
    assert (plan.removed, plan.added) == (("legacy",), ("reports",))
    assert "legacy" not in plan.config.programs and "reports" in plan.config.programs


def test_update_all_is_a_full_update() -> None:
    assert plan_update(OLD, NEW, ["all"]) == plan_update(OLD, NEW, None)


def test_a_name_in_neither_file_is_refused_and_plans_nothing() -> None:
    with pytest.raises(UnknownPrograms, match="nosuch"):
        plan_update(OLD, NEW, ["orders", "nosuch"])


def test_daemon_settings_that_cannot_change_in_place_are_named() -> None:
    new = config(*OLD.programs.values(), socket="/run/other.sock", log_dir="/var/log/other")
    warnings = plan_update(OLD, new, None).result.warnings
    assert any(w.startswith("socket: takes effect when qsupervisord restarts") for w in warnings)
    assert any(w.startswith("log_dir: applies to programs added from now on") for w in warnings)
    assert plan_update(OLD, new, ["orders"]).result.warnings == ()


def test_changed_queue_arguments_and_a_removed_binding_roll_the_program_with_warnings() -> None:
    old = config(program("yii", queue_type="classic", queue_arguments=(("x-max-priority", 10),),
                         bindings=(Binding("exchange"), Binding("exchange", "urgent"))))
    new = config(program("yii", queue_type="classic", queue_arguments=(("x-max-priority", 5),),
                         bindings=(Binding("exchange"), Binding("audit", "", "fanout"))))
    plan = plan_update(old, new, None)
    assert plan.changed == ("yii",)
    assert plan.result.changes == (
        "yii: changed (queue_arguments {x-max-priority: 10} -> {x-max-priority: 5}, bindings "
        "[exchange 'exchange' key '', exchange 'exchange' key 'urgent'] -> "
        "[exchange 'exchange' key '', exchange 'audit' key ''])",)
    warnings = plan.result.warnings
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("yii: queue_arguments changed; RabbitMQ cannot change the "
                                  "arguments of existing queue 'yii'")
    assert warnings[1].startswith("yii: binding of queue 'yii' to exchange 'exchange' key "
                                  "'urgent' is no longer configured but stays on the broker")
    # Only added: no warning (the new leader binds it).
    added = config(program("yii", queue_type="classic", queue_arguments=(("x-max-priority", 10),),
                           bindings=(Binding("exchange"), Binding("exchange", "urgent"),
                                     Binding("audit", "", "fanout"))))
    assert plan_update(old, added, None).result.warnings == ()
