"""Bad input never stops what runs: a bad configuration file, and control clients that go away.

An empty, comment-only, truncated or broken file (a deploy that failed half-way) is refused
by `update`, `SIGHUP` and `--check`, named, and changes nothing: the same leader and
workers keep consuming, and every message published around the attempts is handled once.
"""

from __future__ import annotations

import os
import signal
import subprocess

from .daemon import MakeDaemon, RawClient, run_ctl, worker_pids
from .harness import QSUPERVISORD, Ledger, program, wait_for
from .rabbit import Broker

BAD_FILES = {
    "empty": "",
    "only comments": "# queues.yaml, emptied by a failed copy\n",
    "no programs key": "qsupervisord:\n  log_level: debug\n",
    "truncated after programs": None,  # the real file cut after its 'programs:' line
    "broken YAML": "programs:\n  orders: [handler: x\n",
}


def truncated(text: str) -> str:
    return text[: text.index("programs:") + len("programs:")] + "\n"


def test_a_bad_file_is_refused_by_update_hup_and_check_and_changes_nothing(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("badfile")
    daemon = daemons({"orders": program(queue, ledger, workers=2)})
    daemon.start()
    before = daemon.status()
    master = daemon.master_pid()
    good = daemon.config_path.read_text()
    published = broker.publish_many(queue, 10)
    # Without a socket in a readable file, qsupervisorctl is pointed at it directly.
    target = ["-s", str(daemon.socket)]

    for name, text in BAD_FILES.items():
        daemon.config_path.write_text(truncated(good) if text is None else text)
        update = run_ctl(target, "update", as_json=False)
        assert update.returncode == 2, f"{name}: {update}"
        assert str(daemon.config_path) in update.stderr, f"{name}: {update}"
        check = subprocess.run([QSUPERVISORD, "--check", "-c", str(daemon.config_path)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 2, f"{name}: {check.stdout}{check.stderr}"
        assert str(daemon.config_path) in check.stdout + check.stderr, name
        os.kill(master, signal.SIGHUP)
        published += broker.publish_many(queue, 5)
        now = run_ctl(target, "status").json()
        assert now["programs"].keys() == {"orders"}, name
        assert now["programs"]["orders"]["state"] == "RUNNING", name
        assert (now["programs"]["orders"]["leader_pid"]
                == before["programs"]["orders"]["leader_pid"]), name
        assert worker_pids(now, "orders") == worker_pids(before, "orders"), name

    daemon.config_path.write_text(good)
    published += broker.publish_many(queue, 5)
    ledger.wait_for_ids(published)
    counts = ledger.counts()
    assert {msg_id: counts[msg_id] for msg_id in published} == {m: 1 for m in published}
    assert not [e for e in daemon.log_events() if e.get("event") == "configuration applied"]


def test_programs_written_out_as_none_is_applied(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"orders": program(broker.declare("none"), ledger)})
    daemon.start()
    daemon.config_path.write_text("programs: {}\n")
    result = run_ctl(["-s", str(daemon.socket)], "update")
    assert result.returncode == 0, str(result)
    assert run_ctl(["-s", str(daemon.socket)], "status").json()["programs"] == {}


def test_closed_control_connections_release_their_descriptors(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """Each `tail --follow` whose client went away kept a descriptor in the master until
    the program next wrote output (100 closed, +100 descriptors)."""
    daemon = daemons({"orders": program(broker.declare("fds"), ledger)})
    daemon.start()
    master = daemon.master_pid()

    def descriptors() -> int:
        return len(os.listdir(f"/proc/{master}/fd"))

    baseline = descriptors()
    requests = [b'{"v": 1, "id": 1, "cmd": "tail", "args": {"names": ["orders"], "follow": true}}',
                b'{"v": 1, "id": 2, "cmd": "status", "args": {}}',
                b"[" * 10_000, b'{"v": 1, "id": NaN}']
    for _ in range(50):
        for request in requests:
            client = RawClient(daemon.socket)
            client.send(request + b"\n")
            client.reply()  # the tail's first lines, or the answer
            client.close()
    wait_for(lambda: descriptors() <= baseline, timeout=10,
             what=lambda: f"the master's descriptors back to {baseline} (now {descriptors()})")
    assert run_ctl(["-s", str(daemon.socket)], "status").returncode == 0


def test_a_burst_of_pipelined_status_requests_all_get_replies_and_supervision_goes_on(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    """400 status requests pipelined on one connection used to get no reply in 60 s, and
    a SIGKILLed worker stayed a zombie meanwhile: master and leader blocked on each other."""
    queue = broker.declare("burst")
    daemon = daemons({"orders": program(queue, ledger, workers=2)})
    daemon.start()
    before = worker_pids(daemon.status(), "orders")
    client = RawClient(daemon.socket)
    burst = 1000
    client.send(b"".join(b'{"v": 1, "id": %d, "cmd": "status", "args": {}}\n' % n
                         for n in range(burst)))
    os.kill(before[0], signal.SIGKILL)  # in the middle of it
    replies = [client.reply() for _ in range(burst)]
    client.close()
    assert sorted(r["id"] for r in replies) == list(range(burst))
    assert all(r["ok"] for r in replies)
    after = worker_pids(daemon.wait_running(), "orders")
    assert after[0] != before[0] and after[1] == before[1]  # reaped and replaced
    ledger.wait_for_ids(broker.publish_many(queue, 5))
