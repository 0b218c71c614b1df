"""The master's channel to a leader never blocks (master/outbox.py): what the socket cannot
take now waits, in order and with its descriptors, and a leader that stops reading is
killed instead of waited on."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from qsupervisor import ipc
from qsupervisor.master import outbox as outbox_module
from qsupervisor.master.loop import EventLoop
from qsupervisor.master.outbox import Outbox
from qsupervisor.master.program import ProgramRuntime
from tests.unit.config_files import program
from tests.unit.fakes import World

PAD = "x" * 30_000  # a few of these fill a socket's buffer


def fill(box: Outbox) -> int:
    """Send until the socket is full and a message waits; return how many were sent, the
    waiting one included."""
    sent = 0
    while not len(box):
        box.send({"n": sent, "pad": PAD})
        sent += 1
    return sent


def test_what_the_socket_cannot_take_waits_and_goes_out_in_order_with_its_fds() -> None:
    loop = EventLoop()
    master_end, leader_end = ipc.socketpair()
    overflowed: list[bool] = []
    box = Outbox(master_end, loop, lambda: overflowed.append(True))
    first = fill(box)  # never blocks: the last one waits
    r, w = os.pipe()
    box.send({"n": "with fds"}, [r])
    os.close(r)  # the caller's copy: the outbox holds its own
    assert len(box) == 2 and not overflowed
    received = []
    while len(received) < first + 1:
        loop.run_once(max_wait=0.05)  # the outbox writes as the leader reads
        msg, fds = ipc.recv(leader_end)
        received.append((msg, fds))
    assert [m["n"] for m, _ in received] == [*range(first), "with fds"]
    (_, [fd]) = received[-1]
    os.write(w, b"!")
    assert os.read(fd, 1) == b"!"  # the descriptor that travelled is the pipe's
    assert len(box) == 0
    for sock in (master_end, leader_end):
        sock.close()
    for end in (fd, w):
        os.close(end)


def test_a_peer_that_stops_reading_overflows_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "OUTBOX_LIMIT", 3)
    loop = EventLoop()
    master_end, leader_end = ipc.socketpair()
    overflowed: list[bool] = []
    box = Outbox(master_end, loop, lambda: overflowed.append(True))
    fill(box)
    for n in range(10):
        box.send({"more": n})
    assert overflowed == [True] and len(box) == 3
    box.close()
    assert len(box) == 0
    master_end.close()
    leader_end.close()


def test_a_wedged_leader_is_killed_and_replaced_not_waited_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "OUTBOX_LIMIT", 3)
    world = World()
    runtime = ProgramRuntime(program("orders", workers=1), world)  # type: ignore[arg-type]
    runtime.start()
    world.run()
    wedged = world.leader()
    wedged.deaf = True  # it stops reading its channel
    assert runtime.leader is not None
    fill(runtime.leader.outbox)
    runtime.request_queue_stats(lambda reading: None)
    runtime.scale(5)  # four spawn requests, one past the outbox's limit
    world.run()
    assert (wedged.pid, signal.SIGKILL) in world.processes.signals
    world.advance(1.0)  # the leader's respawn backoff
    assert runtime.leader is not None and runtime.leader.pid != wedged.pid
    world.advance(1.0)
    assert runtime.serving() == 5 and runtime.steady()


def test_readable_works_on_descriptors_select_refuses() -> None:
    """The master checks a dying worker's or leader's channel for last words with
    ipc.readable; select() raised ValueError from fd 1024 up, which a master with many
    workers reaches (and the unit suite, with its hundreds of fake processes, did)."""
    a, b = ipc.socketpair()
    high = socket.socket(fileno=os.dup2(a.fileno(), 1500))
    try:
        assert high.fileno() >= 1024
        assert not ipc.readable(high)
        ipc.send(b, {"ev": "ready"})
        assert ipc.readable(high)
    finally:
        high.close()
        a.close()
        b.close()
