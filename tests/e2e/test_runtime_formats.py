"""Message bodies: an undecodable one is dead-lettered at once and the worker carries on;
`format: raw` hands the handler the bytes as they are."""

from __future__ import annotations

from .daemon import MakeDaemon, worker_pids
from .harness import Ledger, runtime_program, wait_for
from .rabbit import Broker


def test_an_undecodable_body_is_dead_lettered_at_once_and_the_worker_carries_on(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("undecodable")
    dead_letters = f"{queue}.failed"
    daemon = daemons({"undecodable": runtime_program(queue, ledger, attempts=5)})
    daemon.start()
    pid = worker_pids(daemon.status(), "undecodable")[0]

    garbage = broker.publish_raw(queue, b"not json", content_type="application/json")
    wait_for(lambda: broker.counts(dead_letters).messages == 1,
             what="the undecodable message in the dead-letter queue")
    after = broker.publish(queue, {"tag": "after"})

    assert ledger.entry(after)["pid"] == pid
    assert garbage not in ledger.counts(), "the handler was given an undecodable body"
    (props, body), = broker.peek(dead_letters)
    assert (props.message_id, body) == (garbage, b"not json")
    assert props.headers["x-qsupervisor-reason"] == "undecodable"
    assert props.headers["x-qsupervisor-attempts"] == 1  # not retried: it cannot get better
    listing = daemon.ctl("failed", "undecodable").json()
    assert [(m["id"], m["reason"]) for m in listing["messages"]] == [(garbage, "undecodable")]
    worker = daemon.status("undecodable")["programs"]["undecodable"]["workers"][0]
    assert (worker["pid"], worker["state"], worker["restarts"]) == (pid, "RUNNING", 0)
    assert broker.counts(queue).messages == 0


def test_format_raw_passes_the_body_bytes_to_the_handler(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("raw")
    daemon = daemons({"raw": runtime_program(queue, ledger, format="raw",
                                             handler="e2eapp.runtime:raw")})
    daemon.start()

    bodies = {broker.publish_raw(queue, body): body
              for body in (b"not json", b"\x00\xff\xfe binary", b'{"a": 1}', b"")}
    by_ctl = daemon.ctl("publish", "raw", "plain text", as_json=False)
    assert by_ctl.returncode == 0, str(by_ctl)
    bodies[by_ctl.stdout.strip()] = b"plain text"

    for entry in ledger.wait_for_ids(bodies):
        assert entry["type"] == "bytes"
        assert bytes.fromhex(entry["hex"]) == bodies[entry["id"]]
    assert broker.counts(f"{queue}.failed").messages == 0
