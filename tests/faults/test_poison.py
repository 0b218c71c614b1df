"""The poison set: a message whose handler raises, calls os._exit(0), os.abort(), reads
address 0 (SIGSEGV), or holds the GIL in one C call for five heartbeat intervals (the
connection's heartbeats stop and the broker redelivers the message while the first run
still holds it). Each ends in the dead-letter queue after exactly `attempts` runs, its runs
never overlap (each run records which earlier runs of the same message were still alive
when it started), and the messages around it are handled once.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e.harness import wait_for

from .nodes import RabbitNode
from .support import (
    POISON_HANDLER,
    RECOVERY,
    FaultLedger,
    MakeDaemon,
    NodeBroker,
    account,
    flow_program,
    report,
)

ATTEMPTS = 3
HEARTBEAT = 2  # seconds, for the GIL case
# The GIL case's C call: long enough that the broker surely gives up on the connection, so
# the message is redelivered. RabbitMQ closes it after two missed heartbeat checks, 4 to 6 s
# here: a 5.3 s hold once went unnoticed.
HOLD = 5 * HEARTBEAT
MODES = ["raise", "exit0", "abort", "segfault", "gil"]


def runs_of(ledger: FaultLedger, msg_id: str, event: str = "start") -> list[dict[str, Any]]:
    return sorted((e for e in ledger.entries() if e["id"] == msg_id and e["event"] == event),
                  key=lambda e: e["t"])


@pytest.mark.parametrize("mode", MODES)
def test_a_poison_message_is_dead_lettered_after_exactly_attempts_runs_never_two_at_once(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode, mode: str) -> None:
    queue = broker.declare(f"poison-{mode}")
    dead_letters = f"{queue}.failed"
    url = up_single_node.url
    if mode == "gil":
        url += f"?heartbeat={HEARTBEAT}"
    daemon = daemons({"poison": flow_program(queue, ledger, handler=POISON_HANDLER,
                                             workers=2, prefetch=1, attempts=ATTEMPTS)},
                     broker=url)
    daemon.start()

    good = [broker.publish(queue, {"mode": "ok"}) for _ in range(3)]
    poison = broker.publish(queue, {"mode": mode, "hold": HOLD})
    good += [broker.publish(queue, {"mode": "ok"}) for _ in range(3)]

    def done() -> bool:
        """Dead-lettered, or two runs at once (the assertions below say which)."""
        return (broker.counts(dead_letters)[0] == 1
                or any(r["alive"] for r in runs_of(ledger, poison)))

    wait_for(done, timeout=RECOVERY, interval=0.5,
             what=lambda: f"the {mode} message dead-lettered; runs: {runs_of(ledger, poison)}")
    # Messages published after the dead letter: once they ran, a further run of the poison
    # message (one too many) would have had its chance to show.
    after = [broker.publish(queue, {"mode": "ok"}) for _ in range(4)]
    wait_for(lambda: all(runs_of(ledger, i, "end") for i in good + after), timeout=RECOVERY,
             what=lambda: f"the good messages to run; ledger: {ledger.entries()}")

    runs = runs_of(ledger, poison)
    overlapping = [r for r in runs if r["alive"]]
    listing = daemon.ctl("failed", "poison").json()
    handled = ledger.runs("end")
    del handled[poison]  # its runs are counted above; it must end dead-lettered, not handled
    final = account(good + after + [poison], handled, [m["id"] for m in listing["messages"]])
    report(f"poison-{mode}", final, attempts=ATTEMPTS, runs=len(runs),
           overlapping_runs=len(overlapping), pids=len({r["pid"] for r in runs}))

    assert not overlapping, f"a run started while an earlier one still ran: {runs}"
    assert [r["attempt"] for r in runs] == list(range(1, ATTEMPTS + 1)), runs
    ends = runs_of(ledger, poison, "end")
    for earlier, later in zip(runs, runs[1:]):
        end = next((e for e in ends if e["attempt"] == earlier["attempt"]), None)
        assert end is None or end["t"] <= later["t"], (earlier, end, later)
    assert [(m["id"], m["attempts"]) for m in listing["messages"]] == [(poison, ATTEMPTS)]
    assert final.lost == 0 and final.duplicates == 0, final
    assert all(len(runs_of(ledger, i)) == 1 for i in good + after)
