"""Log formats: what `auto` picks for the stream it writes to, and the journal's lines."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from qsupervisor import logs


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _journal_stream_of(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_auto_is_journal_only_when_the_stream_is_the_one_systemd_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, other = tmp_path / "journal", tmp_path / "other"
    with open(journal, "w") as stream, open(other, "w") as elsewhere:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert logs.resolve_format("auto", stream) == "json"
        monkeypatch.setenv("JOURNAL_STREAM", _journal_stream_of(journal))
        assert logs.resolve_format("auto", stream) == "journal"
        assert logs.resolve_format("auto", logs.QuietStream(stream)) == "journal"
        # stderr redirected elsewhere, the variable inherited: not the journal.
        assert logs.resolve_format("auto", elsewhere) == "json"
        assert logs.resolve_format("json", stream) == "json"
        assert logs.resolve_format("auto", io.StringIO()) == "json"


def test_auto_is_console_on_a_terminal_through_the_quiet_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as tty:
            assert logs.resolve_format("auto", logs.QuietStream(tty)) == "console"
    finally:
        os.close(leader)
        os.close(follower)


def test_journal_lines_carry_the_priority_no_timestamp_and_quote_what_needs_it() -> None:
    out = io.StringIO()
    logs.configure("journal", "debug", out)
    log = logs.get()
    log.info("qsupervisord started", programs=["smoke"], socket="/run/qsupervisor/q.sock")
    log.warning("slow", program="orders", note='a "quoted" value')
    log.error("configuration not applied", errors=["queues.yaml:5: workers: bad"])
    log.debug("tick", n=1)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler crashed", program="orders")
    lines = out.getvalue().splitlines()
    assert lines[0] == ('<6>qsupervisord started programs=["smoke"] '
                        'socket=/run/qsupervisor/q.sock')
    assert lines[1] == '<4>slow program=orders note="a \\"quoted\\" value"'
    assert lines[2] == '<3>configuration not applied errors=["queues.yaml:5: workers: bad"]'
    assert lines[3] == "<7>tick n=1"
    assert lines[4] == "<3>handler crashed program=orders"
    trace = lines[5:]
    assert trace[0] == "<3>Traceback (most recent call last):"
    assert trace[-1] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in trace)
