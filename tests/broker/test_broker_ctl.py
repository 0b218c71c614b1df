"""qsupervisorctl's broker commands, end to end: the real command against the real broker,
configured by a real file. No daemon is needed for these."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from brokerkit import BROKER_URL, Cleanup

from qsupervisor.broker import messages, topology
from qsupervisor.config import ProgramConfig, load_config

QSUPERVISORCTL = str(Path(sys.executable).parent / "qsupervisorctl")


class Ctl:
    def __init__(self, config: Path, program: ProgramConfig) -> None:
        self.config = config
        self.program = program

    def __call__(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([QSUPERVISORCTL, "-c", str(self.config), *args], input=stdin,
                              capture_output=True, timeout=60)


def write_config(directory: Path, name: str, queue: str, broker: str | list[str] = BROKER_URL,
                 **settings: Any) -> Path:
    config = {
        "qsupervisord": {"broker": broker, "socket": str(directory / "qsv.sock"),
                         "pidfile": str(directory / "qsv.pid"), "log_dir": str(directory),
                         "logfile": str(directory / "qsv.log")},
        "programs": {name: {"handler": "app:handle", "queue": queue, **settings}},
    }
    path = directory / "queues.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def ctl(tmp_path: Path, unique, cleanup: Cleanup) -> Ctl:
    queue = unique("ctl")
    path = write_config(tmp_path, "jobs", queue)
    config = load_config(str(path))
    program = config.programs["jobs"]
    cleanup.topology(topology.Topology.for_program(program, config.daemon.delay))
    return Ctl(path, program)


def get_all(connection: pika.BlockingConnection, queue: str) -> list[Any]:
    channel, found = connection.channel(), []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        found.append((properties, body))


def seed_dead_letters(connection: pika.BlockingConnection, ctl: Ctl, count: int) -> list[str]:
    """Dead-lettered messages as a worker would leave them, published directly."""
    topology.declare(connection.channel, ctl.program, load_config(str(ctl.config)).daemon.delay)
    channel = connection.channel()
    channel.confirm_delivery()
    ids = []
    for n in range(count):
        failure = messages.Failure("exception", "ValueError", f"bad order {n}", "Traceback ...")
        headers = messages.dead_letter_headers({messages.ATTEMPT: 5, messages.ENQUEUED_AT: 1},
                                               failure, queue=ctl.program.queue)
        properties = messages.message_properties(messages.CONTENT_TYPE_JSON, headers=headers)
        channel.basic_publish("", ctl.program.dead_letter_queue, b'{"n": %d}' % n, properties,
                              mandatory=True)
        ids.append(properties.message_id)
    return ids


def test_publish_prints_the_id_and_the_message_is_in_the_queue(
        ctl: Ctl, connection: pika.BlockingConnection) -> None:
    result = ctl("publish", "jobs", '{"order": 7}', "--header", "tenant=acme", "--id", "m-7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "m-7"
    [(properties, body)] = get_all(connection, ctl.program.queue)
    assert json.loads(body) == {"order": 7}
    assert properties.headers["tenant"] == "acme"
    assert properties.headers[messages.ATTEMPT] == 1


def test_publish_with_a_delay_goes_through_the_delay_chain(
        ctl: Ctl, connection: pika.BlockingConnection) -> None:
    result = ctl("publish", "jobs", "[1, 2]", "--delay", "300ms")
    assert result.returncode == 0, result.stderr
    channel = connection.channel()
    for _ in range(100):  # up to 10 s: a correctness deadline, not a speed assertion
        method, properties, body = channel.basic_get(ctl.program.queue, auto_ack=True)
        if method is not None:
            break
        connection.sleep(0.1)
    assert body == b"[1,2]"
    assert messages.DUE_AT in properties.headers and "x-death" in properties.headers


def test_publish_takes_a_priority_a_message_id_and_the_raw_format(
        ctl: Ctl, connection: pika.BlockingConnection) -> None:
    result = ctl("publish", "jobs", "{}", "--priority", "7", "--message-id", "m-8")
    assert result.returncode == 0, result.stderr
    result = ctl("publish", "jobs", "not json, sent as it is", "--raw")
    assert result.returncode == 0, result.stderr
    [(first, body), (second, raw)] = get_all(connection, ctl.program.queue)
    assert (first.priority, first.message_id, body) == (7, "m-8", b"{}")
    assert (second.priority, raw) == (None, b"not json, sent as it is")
    assert second.content_type == "application/octet-stream"


@pytest.mark.parametrize("args, text", [
    (["publish", "jobs", "{}", "--priority", "256"], "from 0 to 255"),
    (["publish", "jobs", "{}", "--id", "x" * 256], "message_id is at most 255 bytes"),
    (["publish", "jobs", "{}", "--header", "k" * 256 + "=v"], "a key is at most 255 bytes"),
    (["publish", "jobs", "{not json"], "not valid JSON"),
    (["publish", "nosuch", "{}"], "no program 'nosuch'"),
    (["publish", "jobs", "{}", "--delay", "soon"], "--delay"),
    (["publish", "jobs", "{}", "--header", "novalue"], "KEY=VALUE"),
    (["retry-failed", "jobs"], "--all or message IDs"),
    (["purge-failed", "jobs"], "not a terminal"),
])
def test_usage_errors_exit_2(ctl: Ctl, args: list[str], text: str) -> None:
    result = ctl(*args)
    assert result.returncode == 2
    assert text in result.stderr.decode()


def test_a_broken_configuration_exits_2_listing_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("programs:\n  jobs:\n    workers: -1\n")
    result = subprocess.run([QSUPERVISORCTL, "-c", str(path), "failed", "jobs"],
                            capture_output=True, timeout=60)
    assert result.returncode == 2
    assert "handler" in result.stderr.decode() and "workers" in result.stderr.decode()


def test_an_unreachable_broker_exits_1_naming_the_host_without_the_password(
        tmp_path: Path) -> None:
    path = write_config(tmp_path, "jobs", "jobs", broker="amqp://guest:s3cret@127.0.0.1:1/%2F")
    result = subprocess.run([QSUPERVISORCTL, "-c", str(path), "publish", "jobs", "{}"],
                            capture_output=True, timeout=60)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "127.0.0.1:1" in stderr and "s3cret" not in stderr


def test_the_broker_commands_pass_over_a_node_that_is_down(
        tmp_path: Path, unique, cleanup: Cleanup, connection: pika.BlockingConnection) -> None:
    queue = unique("ctl-nodes")
    down = "amqp://guest:s3cret@127.0.0.1:1/%2F"  # nothing listens on port 1
    path = write_config(tmp_path, "jobs", queue, broker=[down, BROKER_URL])
    config = load_config(str(path))
    cleanup.topology(topology.Topology.for_program(config.programs["jobs"], config.daemon.delay))
    for _ in range(3):  # each run shuffles the nodes: the one down comes first now and then
        result = subprocess.run([QSUPERVISORCTL, "-c", str(path), "publish", "jobs", "{}"],
                                capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        shown = subprocess.run([QSUPERVISORCTL, "-c", str(path), "failed", "jobs"],
                               capture_output=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
    assert len(get_all(connection, queue)) == 3


def test_failed_shows_dead_letters_without_removing_them(
        ctl: Ctl, connection: pika.BlockingConnection) -> None:
    ids = seed_dead_letters(connection, ctl, 3)
    result = ctl("failed", "jobs", "--json")
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    assert shown["total"] == 3
    assert [m["id"] for m in shown["messages"]] == ids
    first = shown["messages"][0]
    assert (first["reason"], first["error_type"], first["error"], first["attempts"]) == (
        "exception", "ValueError", "bad order 0", 5)
    text = ctl("failed", "jobs", "-n", "2")
    assert text.returncode == 0
    lines = text.stdout.decode().splitlines()
    assert "3 messages, showing the first 2" in lines[0]
    assert ids[0] in lines[2] and "ValueError: bad order 0" in lines[2]
    assert topology.queue_depth(connection.channel, ctl.program.dead_letter_queue) == (3, 0)


def test_retry_failed_moves_chosen_messages_back_with_attempts_reset(
        ctl: Ctl, connection: pika.BlockingConnection) -> None:
    ids = seed_dead_letters(connection, ctl, 3)
    result = ctl("retry-failed", "jobs", ids[1], "no-such-id")
    assert result.returncode == 1  # one id was not found
    assert "moved 1 message" in result.stdout.decode()
    assert "no-such-id" in result.stderr.decode()
    [(properties, body)] = get_all(connection, ctl.program.queue)
    assert properties.message_id == ids[1] and body == b'{"n": 1}'
    assert properties.headers[messages.ATTEMPT] == 1
    assert properties.headers[messages.ENQUEUED_AT] == 1  # the first publish, kept
    assert not set(messages.FAILURE_HEADERS) & set(properties.headers)
    assert topology.queue_depth(connection.channel, ctl.program.dead_letter_queue) == (2, 0)

    result = ctl("retry-failed", "jobs", "--all")
    assert result.returncode == 0, result.stderr
    assert "moved 2 messages" in result.stdout.decode()
    assert sorted(p.message_id for p, _ in get_all(connection, ctl.program.queue)) == sorted(
        [ids[0], ids[2]])
    assert topology.queue_depth(connection.channel, ctl.program.dead_letter_queue) == (0, 0)


def test_purge_failed_with_yes_empties_the_dead_letter_queue(
        ctl: Ctl, connection: pika.BlockingConnection) -> None:
    seed_dead_letters(connection, ctl, 2)
    refused = ctl("purge-failed", "jobs", stdin=b"y\n")  # not a terminal: never asks
    assert refused.returncode == 2
    assert topology.queue_depth(connection.channel, ctl.program.dead_letter_queue) == (2, 0)
    result = ctl("purge-failed", "jobs", "--yes")
    assert result.returncode == 0, result.stderr
    assert "purged 2 messages" in result.stdout.decode()
    assert topology.queue_depth(connection.channel, ctl.program.dead_letter_queue) == (0, 0)


@pytest.mark.parametrize("answer, code, left", [(b"y\n", 0, 0), (b"n\n", 1, 1)])
def test_purge_failed_asks_on_a_terminal(ctl: Ctl, connection: pika.BlockingConnection,
                                         answer: bytes, code: int, left: int) -> None:
    seed_dead_letters(connection, ctl, 1)
    master, terminal = pty.openpty()
    try:
        os.write(master, answer)  # typed ahead; the terminal holds it until it is read
        result = subprocess.run([QSUPERVISORCTL, "-c", str(ctl.config), "purge-failed", "jobs"],
                                stdin=terminal, capture_output=True, timeout=60)
    finally:
        os.close(master)
        os.close(terminal)
    assert result.returncode == code, result.stderr
    assert b"Delete the 1 message(s)" in result.stdout
    assert topology.queue_depth(connection.channel, ctl.program.dead_letter_queue) == (left, 0)
