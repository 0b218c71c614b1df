"""The crash ledger: counts per message id, consumed once, bounded."""

from __future__ import annotations

from qsupervisor.master import crashes
from qsupervisor.master.crashes import CrashLedger


def test_crashes_of_a_message_are_counted_and_told_once() -> None:
    ledger = CrashLedger()
    ledger.record("m1", "signal SIGKILL")
    ledger.record("m1", "exit code 1")
    assert ledger.take("m1") == (2, "exit code 1")
    assert ledger.take("m1") == (0, "")


def test_an_unknown_message_has_no_crashes() -> None:
    assert CrashLedger().take("never-seen") == (0, "")


def test_the_ledger_forgets_the_oldest_entries_beyond_its_bound(monkeypatch) -> None:
    monkeypatch.setattr(crashes, "MAX_ENTRIES", 3)
    ledger = CrashLedger()
    for i in range(5):
        ledger.record(f"m{i}", "crashed")
    assert len(ledger) == 3
    assert ledger.take("m0") == (0, "") and ledger.take("m4") == (1, "crashed")
