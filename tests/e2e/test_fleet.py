"""The fleet view end to end: real daemons announce themselves on the real broker through
their heralds, and each one's `qsupervisorctl fleet` shows the others (issue 13)."""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

from .daemon import Daemon, MakeDaemon
from .harness import BROKER_URL, DEADLINE, Ledger, pid_alive, proc_title, program, wait_for
from .rabbit import Broker, rabbitmqctl, unique_queue

INTERVAL = 0.5  # seconds: stale after 1.5 s unheard, gone after 5 s


def fleet(daemon: Daemon, *args: str) -> dict[str, Any]:
    result = daemon.ctl("fleet", *args)
    assert result.returncode in (0, 1), str(result)
    return result.json()


def nodes(daemon: Daemon, *args: str) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in fleet(daemon, *args)["nodes"]}


def programs(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in node["programs"]}


def herald_pid(daemon: Daemon) -> int | None:
    pid = daemon.status()["master"]["herald_pid"]
    return int(pid) if pid else None


def test_two_daemons_see_each_other_then_a_stopped_one_goes_stale_then_away(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    tag = uuid.uuid4().hex[:8]
    name_a, name_b = f"fleet-a-{tag}", f"fleet-b-{tag}"
    queue_a, queue_b, idle = (broker.name("fleet-a"), broker.name("fleet-b"),
                              broker.name("fleet-idle"))
    a = daemons({"alpha": program(queue_a, ledger, workers=2)},
                node_name=name_a, fleet={"interval": f"{INTERVAL}s"})
    b = daemons({"beta": program(queue_b, ledger),
                 "idle": program(idle, ledger, workers=0)},
                node_name=name_b, fleet={"interval": f"{INTERVAL}s"})
    a.start()
    b.start()
    broker.publish_many(idle, 3)  # nobody consumes them: the depth the fleet must show
    pid = herald_pid(a)
    assert pid is not None and proc_title(pid) == "qsupervisord: herald"

    def both_seen(daemon: Daemon) -> dict[str, dict[str, Any]] | None:
        """Both daemons announced, and announced as running: the idle queue's depth, and
        every worker consuming (an announcement made while beta's worker was still
        attaching its consumer showed it at 0, seen once in CI)."""
        seen = nodes(daemon)
        if name_a not in seen or name_b not in seen:
            return None
        if programs(seen[name_b]).get("idle", {}).get("queue_depth") != 3:
            return None
        if (programs(seen[name_a]).get("alpha", {}).get("consuming") != 2
                or programs(seen[name_b]).get("beta", {}).get("consuming") != 1):
            return None
        return seen

    for daemon in (a, b):
        seen = wait_for(lambda d=daemon: both_seen(d), what="both daemons in the fleet view")
        alpha = programs(seen[name_a])["alpha"]
        assert (alpha["state"], alpha["consuming"], alpha["desired"], alpha["workers"],
                alpha["queue"], alpha["queue_depth"]) == ("RUNNING", 2, 2, 2, queue_a, 0)
        beta = programs(seen[name_b])
        assert set(beta) == {"beta", "idle"}
        assert (beta["beta"]["consuming"], beta["beta"]["desired"]) == (1, 1)
        assert (beta["idle"]["state"], beta["idle"]["desired"]) == ("RUNNING", 0)
        for node in (seen[name_a], seen[name_b]):
            assert node["stale"] is False and node["interval"] == INTERVAL
        assert seen[name_a]["pid"] == a.master_pid() and seen[name_b]["pid"] == b.master_pid()

    # Figures move: jobs done show as jobs per second, busy workers as busy.
    ids = broker.publish_many(queue_a, 30)
    ledger.wait_for_ids(ids)
    wait_for(lambda: (programs(nodes(b)[name_a])["alpha"]["jobs_per_s"] or 0) >= 0.5,
             what="alpha's jobs per second in b's fleet view")

    only = fleet(a, "--program", "idle")
    assert [(n["node"], [p["name"] for p in n["programs"]]) for n in only["nodes"]] == [
        (name_b, ["idle"])]
    text = a.ctl("fleet", as_json=False)
    assert text.returncode == 0, str(text)
    assert name_a in text.stdout and name_b in text.stdout and "alpha" in text.stdout

    b.shutdown()  # every pid of its tree, the herald's included, must be gone
    wait_for(lambda: nodes(a).get(name_b, {}).get("stale") is True,
             timeout=3 * INTERVAL + DEADLINE / 3, what=f"{name_b} stale in a's fleet view")
    assert "(stale)" in a.ctl("fleet", as_json=False).stdout
    wait_for(lambda: name_b not in nodes(a), timeout=10 * INTERVAL + DEADLINE / 3,
             what=f"{name_b} dropped from a's fleet view")
    assert nodes(a)[name_a]["stale"] is False


def test_a_herald_killed_is_started_again_and_one_whose_master_dies_goes_with_it(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    name = f"fleet-k-{uuid.uuid4().hex[:8]}"
    daemon = daemons({"kappa": program(broker.name("fleet-k"), ledger)},
                     node_name=name, fleet={"interval": f"{INTERVAL}s"})
    daemon.start()
    first = herald_pid(daemon)
    assert first is not None
    os.kill(first, signal.SIGKILL)

    def new_herald() -> int | None:
        pid = herald_pid(daemon)
        return pid if pid not in (None, first) else None
    second = wait_for(new_herald, what="a new herald")
    wait_for(lambda: name in nodes(daemon), what="the fleet view back")
    master = daemon.master_pid()
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: not pid_alive(second), what="the herald to exit with its master")


def test_the_master_reaps_its_herald_before_it_exits(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    # Under systemd a process left in the cgroup when the master exits is SIGKILLed, and
    # the stop counts as failed: the herald must be gone by the time the master is.
    daemon = daemons({"lam": program(broker.name("fleet-l"), ledger)},
                     node_name=f"fleet-l-{uuid.uuid4().hex[:8]}",
                     fleet={"interval": f"{INTERVAL}s"})
    daemon.start()
    herald = herald_pid(daemon)
    assert herald is not None and daemon.proc is not None

    os.kill(daemon.master_pid(), signal.SIGTERM)

    assert daemon.proc.wait(DEADLINE) == 0
    assert not pid_alive(herald), "the herald outlived its master"


def test_a_daemon_on_another_virtual_host_is_not_seen(daemons: MakeDaemon, broker: Broker,
                                                      ledger: Ledger) -> None:
    tag = uuid.uuid4().hex[:8]
    vhost = f"qsv-fleet-{tag}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        here, there = f"fleet-here-{tag}", f"fleet-there-{tag}"
        a = daemons({"here": program(broker.name("fleet-here"), ledger)},
                    node_name=here, fleet={"interval": f"{INTERVAL}s"})
        # Its queues go with the virtual host.
        c = daemons({"there": program(unique_queue("fleet-there"), ledger)},
                    node_name=there, fleet={"interval": f"{INTERVAL}s"},
                    broker=BROKER_URL.rsplit("/", 1)[0] + "/" + vhost)
        a.start()
        c.start()
        wait_for(lambda: there in nodes(c), what="the other virtual host's daemon, to itself")
        wait_for(lambda: here in nodes(a), what="this virtual host's daemon, to itself")
        # Ten intervals: anything announced across virtual hosts would have shown by now.
        deadline_seen = [nodes(c) for _ in range(10)]
        assert all(here not in seen for seen in deadline_seen)
        assert there not in nodes(a)
        c.teardown()
    finally:
        rabbitmqctl("delete_vhost", vhost)
