"""The control side: who may connect, exit codes, bad input on the socket, and tail."""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from pathlib import Path

from .daemon import MakeDaemon, RawClient, run_ctl, run_ctl_as, worker_pids
from .harness import DEADLINE, QSUPERVISORCTL, Ledger, program, wait_for
from .rabbit import Broker

NOBODY = 65534  # uid (and gid) of "nobody" on Debian


def test_peer_not_on_the_allow_list_is_refused_and_logged(
        public_dir: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"guarded": program(broker.declare("guarded"), ledger)},
                     socket=str(public_dir / "qsv.sock"), socket_mode="0666")
    daemon.start()

    result = run_ctl_as(NOBODY, daemon.socket, "status")

    assert result.returncode == 1, str(result)
    assert f"uid {NOBODY} is not allowed" in result.stderr, str(result)
    wait_for(lambda: any(e.get("event") == "control connection refused"
                         and e.get("peer_uid") == NOBODY for e in daemon.log_events()),
             what="a 'control connection refused' line in the daemon's log")
    daemon.wait_running()  # and the daemon serves its own user as before


def test_peer_named_in_allow_users_is_accepted(
        public_dir: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"open": program(broker.declare("open"), ledger)},
                     socket=str(public_dir / "qsv.sock"), socket_mode="0666",
                     allow_users=["nobody"])
    daemon.start()

    result = run_ctl_as(NOBODY, daemon.socket, "status")

    assert result.returncode == 0, str(result)
    assert result.json()["master"]["pid"] == daemon.master_pid()


def test_status_exits_3_while_a_program_has_a_worker_that_cannot_start(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"good": program(broker.declare("good"), ledger),
                      "broken": program(broker.declare("broken"), ledger, start_retries=2,
                                        handler="e2eapp.broken:work")})
    daemon.start(wait=False)
    good = daemon.wait_running("good")

    def fatal_worker() -> object:
        workers = daemon.status("broken")["programs"]["broken"]["workers"]
        return workers[0] if workers and workers[0]["state"] == "FATAL" else None

    worker = wait_for(fatal_worker, what="the broken program's worker to go FATAL")
    assert "cannot be imported" in (worker["last_exit"] or ""), worker
    assert daemon.ctl("status", "broken").returncode == 3
    assert daemon.ctl("status", "good").returncode == 0
    assert daemon.ctl("status", "good", "broken").returncode == 3
    assert "FATAL" in daemon.ctl("status", "broken", as_json=False).stdout
    assert "cannot import the handler" in daemon.program_log("broken")

    # An explicit start tries again, fails again, and says so.
    result = daemon.ctl("start", "broken")
    assert result.returncode == 1, str(result)
    assert result.json()["programs"]["broken"]["ok"] is False
    assert worker_pids(daemon.status(), "good") == worker_pids(good, "good")


def test_ctl_exits_2_for_an_unknown_program_and_4_when_the_daemon_is_unreachable(
        tmp_path: Path, daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"known": program(broker.declare("known"), ledger)})
    daemon.start()

    for args in (("status", "nosuch"), ("reload", "nosuch"), ("scale", "nosuch", "2")):
        result = daemon.ctl(*args)
        assert result.returncode == 2, str(result)
        assert "no such program: nosuch" in result.stderr, str(result)

    nowhere = run_ctl(["-s", str(tmp_path / "nobody-listens.sock")], "status")
    assert nowhere.returncode == 4, str(nowhere)
    assert "cannot reach qsupervisord" in nowhere.stderr
    missing = run_ctl(["-c", str(tmp_path / "missing.yaml")], "status")
    assert missing.returncode == 2, str(missing)


def test_control_socket_answers_bad_input_with_errors_and_keeps_serving(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    daemon = daemons({"robust": program(broker.declare("robust"), ledger)})
    daemon.start()
    before = daemon.status()

    idle = RawClient(daemon.socket)  # connected and silent throughout: must block nothing
    client = RawClient(daemon.socket)
    for data, code in ((b"this is not json\n", "bad_request"),
                       (b"[1, 2, 3]\n", "bad_request"),
                       (b'{"v": 99, "id": 1, "cmd": "status", "args": {}}\n', "version"),
                       (b'{"v": 1, "id": 2, "cmd": "no-such-command", "args": {}}\n',
                        "bad_request"),
                       (b'{"v": 1, "id": 3, "cmd": "status", "args": []}\n', "bad_request"),
                       (b'{"v": 1, "id": 4, "cmd": "scale", "args": {"names": ["robust"], '
                        b'"workers": "many"}}\n', "bad_request")):
        reply = _ask(client, data)
        assert reply["ok"] is False and reply["error"]["code"] == code, (data, reply)
    reply = _ask(client, b'{"v": 1, "id": 5, "cmd": "status", "args": {}}\n')
    assert reply["ok"] is True and reply["id"] == 5  # the same connection still works
    client.close()

    huge = RawClient(daemon.socket)
    try:
        huge.send(b'{"v": 1, "cmd": "status", "args": {"pad": "' + b"x" * (2 << 20) + b'"}}\n')
    except OSError:
        pass  # the daemon may hang up before reading it all; its reply is already queued
    reply = huge.reply()
    assert reply["ok"] is False and reply["error"]["code"] == "too_large", reply
    huge.close()

    vanishing = RawClient(daemon.socket)
    vanishing.send(b'{"v": 1, "id": 6, "cmd": "sta')  # half a request, then gone
    vanishing.close()

    after = daemon.wait_running()
    assert after["master"]["pid"] == before["master"]["pid"]
    assert worker_pids(after, "robust") == worker_pids(before, "robust")
    idle.close()


def _ask(client: RawClient, data: bytes) -> dict:
    client.send(data)
    return client.reply()


def test_tail_shows_captured_worker_output_and_follows_new_lines(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("out")
    daemon = daemons({"out": program(queue, ledger)})
    daemon.start()
    first = f"e2e-line-{uuid.uuid4().hex}"
    ledger.wait_for_ids([broker.publish(queue, {"print": first})])

    wait_for(lambda: first in daemon.ctl("tail", "out", "-n", "20", as_json=False).stdout,
             what=f"{first!r} in `tail out -n 20`")
    result = daemon.ctl("tail", "out", "-n", "20")
    assert result.returncode == 0 and first in result.json()["data"], str(result)

    # Ctrl-C's default action even when the suite runs as a background job, whose shell
    # starts it with SIGINT ignored (and Python then leaves it ignored).
    follower = subprocess.Popen([QSUPERVISORCTL, "-c", str(daemon.config_path), "tail", "out",
                                 "-f", "-n", "1"], stdout=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: list[str] = []

    def read_lines() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        second = f"e2e-line-{uuid.uuid4().hex}"
        broker.publish(queue, {"print": second})
        wait_for(lambda: any(second in line for line in seen),
                 what=f"{second!r} streamed by `tail -f`")
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(DEADLINE)
    assert follower.returncode == 0
    reader.join(DEADLINE)

    # The follower is gone; more output must not trouble the daemon.
    ledger.wait_for_ids([broker.publish(queue, {"print": "after the follower left"})])
    daemon.wait_running()
