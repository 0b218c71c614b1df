"""A Yii2 application moves its yii2-queue jobs to qsupervisor, with real PHP: the
producer stays as it is (tests/clients/yii2/push.php sends exactly what yii2-queue's AMQP
driver sends: its priority queue and exchange, PHP-serialized jobs, yii-ttr/yii-attempt
headers, delays through enqueue's per-delay queues), and a qsupervisor program on the Yii
queue runs `yii queue/exec` per job (tests/clients/yii2/yii stands in for Yii's command,
which cannot be installed here). Every message is counted: handled once, or dead-lettered
with its reason, or given up by Yii itself; none early, none lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .daemon import MakeDaemon
from .harness import BROKER_URL, QUICK_BACKOFF, Ledger, pid_alive, wait_for
from .rabbit import Broker, unique_queue

YII_DIR = Path(__file__).resolve().parents[1] / "clients" / "yii2"
TIMEOUT = 2  # the program's timeout, Yii's TTR for queue/exec
DELAY = 2  # seconds, for the delayed pushes

pytestmark = pytest.mark.skipif(shutil.which("php") is None or
                                not Path("/usr/share/php/PhpAmqpLib/autoload.php").exists(),
                                reason="needs php-cli and php-amqplib (.ci/setup installs them)")


def push(queue: str, exchange: str, jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Push with the yii2-queue stand-in producer; tag -> {id, tag, pushed_at}."""
    proc = subprocess.run(["php", str(YII_DIR / "push.php"), BROKER_URL, queue, exchange,
                           json.dumps(jobs)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    pushed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(pushed) == len(jobs), proc.stdout
    return {p["tag"]: p for p in pushed}


def started(ledger: Ledger) -> list[dict[str, Any]]:
    path = Path(str(ledger.path) + ".started")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def yii_queue(broker: Broker) -> Any:
    """The Yii queue's names; its exchange and enqueue's delay queues are deleted after."""
    queue = unique_queue("yii")
    broker.queues.append(queue)
    exchange = f"{queue}.exchange"
    yield queue, exchange
    channel = broker.channel
    for delay in (DELAY * 1000,):
        channel.queue_delete(f"enqueue.{exchange}.{delay}.x.delay")
    channel.exchange_delete(exchange)


def yii_program(queue: str, exchange: str, ledger: Ledger, **settings: Any) -> dict[str, Any]:
    program: dict[str, Any] = {
        "command": [str(YII_DIR / "yii"), "queue/exec", "{message_id}", "{timeout}",
                    "{attempt}", "{worker_pid}"],
        "queue": queue,
        "queue_type": "classic",
        "queue_arguments": {"x-max-priority": 10},
        "bindings": [{"exchange": exchange, "type": "direct", "routing_key": ""}],
        "workers": 1,
        "prefetch": 1,
        "timeout": f"{TIMEOUT}s",
        "attempts": 2,
        "backoff": dict(QUICK_BACKOFF),
        "stop_timeout": "5s",
        "environment": {"E2E_LEDGER": str(ledger.path)},
    }
    program.update(settings)
    return program


def test_a_yii2_queue_app_runs_its_jobs_under_qsupervisor_without_changing_its_producer(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, yii_queue: tuple[str, str]) -> None:
    queue, exchange = yii_queue
    # A backlog, pushed before qsupervisor runs (the producer declares the queue as Yii
    # does): high-priority jobs must run before the low ones whatever the order.
    backlog = [{"tag": f"low-{n}", "priority": 1} for n in range(5)]
    backlog += [{"tag": f"high-{n}", "priority": 9} for n in range(5)]
    backlog += [
        {"tag": "failing", "job": {"fail": True}},  # Yii says retry: exit 3
        {"tag": "given-up", "job": {"fail": True, "attempts": 1}},  # Yii gives up: exit 0
        {"tag": "stuck", "job": {"sleep": 60, "spawn": True}},  # past the timeout
    ]
    pushed = push(queue, exchange, backlog)
    daemon = daemons({"yii": yii_program(queue, exchange, ledger)})
    daemon.start()
    # Delayed pushes while it runs: never handled before they are due.
    pushed.update(push(queue, exchange, [{"tag": f"delayed-{n}", "delay": DELAY}
                                         for n in range(4)]))
    pushed.update(push(queue, exchange, [{"tag": f"plain-{n}"} for n in range(6)]))

    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 2, timeout=90,
             what=lambda: f"the failing and the stuck job dead-lettered; ledger "
                          f"{[e['tag'] for e in ledger.entries()]}")
    done = {"low", "high", "delayed", "plain"}
    handled = [p["id"] for tag, p in pushed.items() if tag.split("-")[0] in done]
    entries = ledger.wait_for_ids(handled)

    # Each handled job ran once, with the id, TTR and attempt qsupervisor passed.
    runs = ledger.counts()
    assert all(runs[i] == 1 for i in handled), runs
    for entry in entries:
        assert (entry["ttr"], entry["attempt"]) == (TIMEOUT, 1), entry
    order = [e["tag"] for e in ledger.entries() if e["tag"].startswith(("low", "high"))]
    assert order.index("high-4") < min(order.index(f"low-{n}") for n in range(5)), order
    for n in range(4):
        entry = ledger.entry(pushed[f"delayed-{n}"]["id"])
        assert entry["t"] >= pushed[f"delayed-{n}"]["pushed_at"] + DELAY, "ran early"
    # Yii gave up on its own (canRetry said no): one run, acked, nothing dead-lettered.
    assert runs[pushed["given-up"]["id"]] == 1
    # The failing job: Yii asked for a retry, qsupervisor retried it until `attempts`.
    failing = [e for e in ledger.entries() if e["id"] == pushed["failing"]["id"]]
    assert [e["attempt"] for e in failing] == [1, 2]
    dead = {props.message_id: props.headers for props, _ in broker.peek(f"{queue}.failed")}
    failed = dead[pushed["failing"]["id"]]
    assert (failed["x-qsupervisor-reason"], failed["x-qsupervisor-error"]) == \
        ("exit", "command exited with status 3")
    assert "RuntimeException: job failing failed on purpose" in failed["x-qsupervisor-traceback"]
    stuck = dead[pushed["stuck"]["id"]]
    assert stuck["x-qsupervisor-reason"] == "timeout"
    stuck_runs = [s for s in started(ledger) if s["id"] == pushed["stuck"]["id"]]
    assert len(stuck_runs) == 2
    for run in stuck_runs:
        wait_for(lambda run=run: not pid_alive(run["pid"]) and not pid_alive(run["child"]),
                 what=f"the stuck job {run} and the child it started to be gone")
    # Nothing left anywhere, nothing lost: every pushed message accounted for once.
    wait_for(lambda: broker.counts(queue).messages == 0, what="the Yii queue to be empty")
    assert broker.counts(f"enqueue.{exchange}.{DELAY * 1000}.x.delay").messages == 0
    accounted = set(handled) | {pushed["given-up"]["id"]} | set(dead)
    assert accounted == {p["id"] for p in pushed.values()}
    workers = daemon.status("yii")["programs"]["yii"]["workers"]
    assert all(w["restarts"] == 0 for w in workers), workers


def test_qsupervisor_first_then_yii_pushes_to_the_queue_it_declared(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, yii_queue: tuple[str, str]) -> None:
    queue, exchange = yii_queue
    daemon = daemons({"yii": yii_program(queue, exchange, ledger, workers=2)})
    daemon.start()
    start = time.time()

    pushed = push(queue, exchange, [{"tag": f"job-{n}"} for n in range(8)]
                  + [{"tag": "later", "delay": DELAY}])

    entries = ledger.wait_for_ids(p["id"] for p in pushed.values())
    assert sorted(ledger.counts().values()) == [1] * 9
    later = next(e for e in entries if e["tag"] == "later")
    assert later["t"] >= pushed["later"]["pushed_at"] + DELAY > start
