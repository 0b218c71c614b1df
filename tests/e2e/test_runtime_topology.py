"""A queue that exists with other arguments than the program declares: that program does
not start and says exactly what conflicts; the other programs run on."""

from __future__ import annotations

import json
from typing import Any

from .daemon import MakeDaemon
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker


def test_a_queue_type_conflict_makes_only_that_program_fatal_naming_queue_and_argument(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    classic = broker.declare("conflict", queue_type="classic")
    good_queue = broker.declare("bystander")
    daemon = daemons({"conflict": runtime_program(classic, ledger, queue_type="quorum"),
                      "good": runtime_program(good_queue, ledger)})
    daemon.start(wait=False)

    def fatal() -> Any:
        result = daemon.ctl("status")  # exit 4 until the control socket is up
        if result.returncode not in (0, 3):
            return None
        program = result.json()["programs"]["conflict"]
        return program if program["state"] == "FATAL" else None

    program = wait_for(fatal, what=lambda: f"program conflict FATAL: {daemon.status()}")
    error = program["error"]
    assert f"queue '{classic}'" in error and "x-queue-type" in error, error
    assert "x-queue-type 'classic'" in error and "x-queue-type 'quorum'" in error, error
    assert program["workers"] == [] or all(w["pid"] is None for w in program["workers"])
    assert daemon.ctl("status", "conflict").returncode == 3
    assert broker.counts(classic).consumers == 0

    daemon.wait_running("good")
    job = broker.publish(good_queue)
    ledger.entry(job)
    # The same words in the program's log (from its leader) and in the daemon's log.
    conflict = error.split(": ", 1)[1]  # status says "topology failed: <the conflict>"
    leader_lines = [json.loads(line) for line in daemon.program_log("conflict").splitlines()
                    if line.startswith("{")]
    assert any(e.get("error") == conflict for e in leader_lines), leader_lines
    assert any(e.get("error") == conflict for e in daemon.log_events())
