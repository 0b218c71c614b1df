"""The fleet view through a broker outage (issue 13): `fleet` keeps answering at once, says
the view is stale (what was last heard, exit 1) while the herald has no broker connection,
and is current again once the herald has reconnected by itself."""

from __future__ import annotations

import time

from e2e.harness import wait_for

from .nodes import RabbitNode
from .support import RECOVERY, FaultLedger, MakeDaemon, NodeBroker, flow_program

INTERVAL = 0.5
ANSWER_BOUND = 4.0  # seconds: the master's 3 s bound on the herald, and the tool's start


def test_fleet_says_stale_during_a_broker_outage_and_recovers(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode) -> None:
    node_name = "fleet-outage"
    daemon = daemons({"flow": flow_program(broker.declare("fleet-outage"), ledger)},
                     broker=up_single_node.url, node_name=node_name,
                     fleet={"interval": f"{INTERVAL}s"})
    daemon.start()

    def fleet() -> tuple[int, dict]:
        started = time.monotonic()
        result = daemon.ctl("fleet")
        took = time.monotonic() - started
        assert took < ANSWER_BOUND, f"fleet took {took:.1f} s: {result}"
        return result.returncode, result.json()

    wait_for(lambda: fleet()[0] == 0 and node_name in [n["node"] for n in fleet()[1]["nodes"]],
             what="the daemon in its own fleet view")
    up_single_node.stop_app()
    try:
        def stale() -> bool:
            code, view = fleet()
            return code == 1 and view["available"] and not view["connected"]
        wait_for(stale, timeout=RECOVERY, interval=0.5, what="fleet saying it is stale")
        code, view = fleet()
        assert view["error"] and [n["node"] for n in view["nodes"]] in ([node_name], [])
        text = daemon.ctl("fleet", as_json=False)
        assert text.returncode == 1 and "fleet view stale: no broker connection" in text.stdout
    finally:
        up_single_node.start_app()

    def current() -> bool:
        code, view = fleet()
        seen = {n["node"]: n for n in view["nodes"]}
        return code == 0 and node_name in seen and not seen[node_name]["stale"]
    wait_for(current, timeout=RECOVERY, interval=0.5, what="the fleet view current again")
    assert "fleet view connected" in (daemon.logfile.read_text())
