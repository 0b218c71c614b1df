"""A file that says 'no programs' in so many words (`programs: {}`) is applied: only a file
that names no programs by accident (empty, comments only, truncated) is refused.

The refusals themselves, the control clients that go away, the pipelined status burst and
the descriptor counts are in the fault suite (tests/faults/test_bad_config.py and
test_control_fuzz.py), on a RabbitMQ node of its own.
"""

from __future__ import annotations

from .daemon import MakeDaemon, run_ctl
from .harness import Ledger, program
from .rabbit import Broker


def test_programs_written_out_as_none_is_applied(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"orders": program(broker.declare("none"), ledger)})
    daemon.start()
    daemon.config_path.write_text("programs: {}\n")
    result = run_ctl(["-s", str(daemon.socket)], "update")
    assert result.returncode == 0, str(result)
    assert run_ctl(["-s", str(daemon.socket)], "status").json()["programs"] == {}
