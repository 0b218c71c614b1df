"""Several broker nodes: workers consume from one node each and, when it goes away, move
to the next node of the list by themselves: no restart, no message lost, and `status`
says where each worker is and whether it consumes.

The two "nodes" are TCP proxies in front of the test broker (tests/e2e/proxy.py): taking
one away cuts its connections as a stopping node does. The fault suite does the same on
a real three-node cluster.
"""

from __future__ import annotations

from typing import Any

from .daemon import MakeDaemon, worker_pids
from .harness import Ledger, runtime_program, wait_for
from .proxy import Proxy, reserve_port, url_via
from .rabbit import Broker

WORKERS = 3
BATCH = 30


def nodes_of(daemon: Any, name: str) -> list[Any]:
    return [w["node"] for w in daemon.status(name)["programs"][name]["workers"]]


def test_workers_move_to_the_next_node_when_theirs_goes_away(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("failover")
    first = Proxy().start()
    second_port = reserve_port()  # the second node is down at first: every worker takes the first
    second = Proxy(second_port)
    try:
        daemon = daemons({"failover": runtime_program(queue, ledger, workers=WORKERS)},
                         broker=[url_via(first.port), url_via(second.port)])
        daemon.start()
        pids = worker_pids(daemon.wait_running("failover"), "failover")
        assert nodes_of(daemon, "failover") == [f"amqp://guest@127.0.0.1:{first.port}/%2F"] * WORKERS
        before = [broker.publish(queue, {"batch": 1, "n": n}) for n in range(BATCH)]
        ledger.wait_for_ids(before)

        second.start()
        first.close()  # the first node goes away with every connection to it
        during = [broker.publish(queue, {"batch": 2, "n": n}) for n in range(BATCH)]

        def moved() -> bool:
            program = daemon.status("failover")["programs"]["failover"]
            return (program["consuming"] == WORKERS
                    and all(w["node"] == f"amqp://guest@127.0.0.1:{second.port}/%2F"
                            and w["consuming"] for w in program["workers"]))

        wait_for(moved, what=lambda: f"every worker on the second node: "
                                     f"{daemon.status('failover')['programs']['failover']}")
        ledger.wait_for_ids(during)
        status = daemon.status("failover")
        assert worker_pids(status, "failover") == pids  # reconnected, not restarted
        assert all(w["restarts"] == 0 and w["broker_error"] is None
                   for w in status["programs"]["failover"]["workers"])
        text = daemon.ctl("status", "failover", as_json=False)
        assert text.returncode == 0, text
        assert text.stdout.count(f"node 127.0.0.1:{second.port}") == WORKERS, text
        counts = ledger.counts()
        assert [i for i in before + during if counts[i] < 1] == []  # none lost
        assert broker.counts(queue).messages == 0
    finally:
        first.close()
        second.close()
