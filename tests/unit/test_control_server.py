"""The daemon's end of the control socket (master/control_server.py) on a real EventLoop
and real client sockets: dispatch and reply order, framing errors and the size limit,
half-closed and vanished clients, flushing before a close, and who may connect."""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import resource
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from qsupervisor.control import protocol
from qsupervisor.master import control_server
from qsupervisor.master.control_server import Connection, ControlServer, PeerPolicy
from qsupervisor.master.loop import EventLoop
from tests.unit.fakes import PID_BASE

Request = dict[str, Any]
ME = PeerPolicy(frozenset({os.getuid()}), frozenset())


class Client:
    """A non-blocking client socket and the lines it has read so far."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.data = b""
        self.eof = False

    def send(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    def poll(self) -> None:
        while not self.eof:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionResetError:
                chunk = b""
            self.data += chunk
            self.eof = not chunk

    def lines(self) -> list[dict[str, Any]]:
        self.poll()
        return [json.loads(line) for line in self.data.splitlines()]


class Served:
    """A ControlServer in tmp_path on a real loop; `handler` answers each request."""

    def __init__(self, path: str, policy: PeerPolicy) -> None:
        self.loop = EventLoop()
        self.server = ControlServer(path, 0o600, policy)
        self.requests: list[tuple[Connection, Request]] = []
        self.handler: Callable[[Connection, Request], None] = self.echo
        self.server.start(self.loop, self._dispatch)
        self.clients: list[Client] = []

    def _dispatch(self, conn: Connection, request: Request) -> None:
        self.requests.append((conn, request))
        self.handler(conn, request)

    @staticmethod
    def echo(conn: Connection, request: Request) -> None:
        conn.send(protocol.ok(request["id"], {"cmd": request["cmd"]}))

    def connect(self) -> Client:
        self.clients.append(Client(self.server.path))
        return self.clients[-1]

    def until(self, done: Callable[[], bool], timeout: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            self.loop.run_once(max_wait=0.05)
            for client in self.clients:
                client.poll()

    def spin(self, rounds: int = 3) -> None:
        """A few rounds with nothing expected to happen."""
        for _ in range(rounds):
            self.loop.run_once(max_wait=0.01)

    def replies(self, client: Client, count: int) -> list[dict[str, Any]]:
        self.until(lambda: client.eof or len(client.lines()) >= count)
        return client.lines()

    def only_connection(self) -> Connection:
        self.until(lambda: len(self.server.connections) == 1)
        return next(iter(self.server.connections.values()))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(str(tmp_path / "ctl.sock"), ME)
    yield s
    for client in s.clients:
        client.sock.close()
    for conn in list(s.server.connections.values()):
        conn.close()
    s.server.stop_listening()


def line(cmd: str, req_id: Any = 1, **args: Any) -> bytes:
    return protocol.encode(protocol.request(cmd, args, req_id))


def test_requests_are_dispatched_and_answered_in_order(served: Served) -> None:
    client = served.connect()
    client.send(line("status", 1) + b"\n  \n" + line("pid", 2, verbose=True))
    assert served.replies(client, 2) == [protocol.ok(1, {"cmd": "status"}),
                                         protocol.ok(2, {"cmd": "pid"})]
    conn = served.only_connection()
    assert [r["args"] for _, r in served.requests] == [{}, {"verbose": True}]
    assert conn.peer == (os.getpid(), os.getuid(), os.getgid())
    assert conn.outstanding == 0 and not conn.closed


def test_a_request_split_across_writes_waits_for_its_newline(served: Served) -> None:
    client = served.connect()
    data = line("status", 9)
    client.send(data[:10])
    served.spin()
    assert served.requests == []
    client.send(data[10:])
    assert served.replies(client, 1) == [protocol.ok(9, {"cmd": "status"})]


def test_bad_lines_get_error_replies_and_the_connection_stays(served: Served) -> None:
    client = served.connect()
    client.send(b"{nope\n" + b'{"v": 2, "id": 3, "cmd": "status"}\n' + b"[1]\n"
                + line("status", 4))
    first, second, third, fourth = served.replies(client, 4)
    assert (first["id"], first["ok"], first["error"]["code"]) == (None, False, "bad_request")
    assert first["error"]["message"].startswith("not valid JSON")
    assert second["error"] == {"code": "version", "message": "protocol version 2 not "
                               "supported; this daemon speaks 1"}
    assert third["error"]["message"] == "a request must be a JSON object"
    assert fourth == protocol.ok(4, {"cmd": "status"})
    assert len(served.requests) == 1 and not client.eof


def test_hostile_lines_get_error_replies_and_the_connection_stays_usable(served: Served) -> None:
    client = served.connect()
    hostile = [b"[" * 100_000, b'{"v": 1, "id": NaN, "cmd": "x"}', b'{"v": 1.0, "cmd": "x"}',
               b'{"v": 1, "id": 1e999, "cmd": "x"}', b"\xff\xfe{}", b'{"v": 1, "id": 3, "cmd": "status"}']
    data = b"\n".join(hostile) + b"\n"
    while data:
        data = data[client.send(data):]
        served.spin(1)
    replies = served.replies(client, len(hostile))
    assert [r.get("error", {}).get("code") for r in replies[:-1]] == [
        protocol.BAD_REQUEST, protocol.BAD_REQUEST, protocol.VERSION_MISMATCH,
        protocol.BAD_REQUEST, protocol.BAD_REQUEST]
    assert all(r["id"] is None for r in replies[:-1])
    assert replies[-1] == protocol.ok(3, {"cmd": "status"})


def test_a_result_that_is_not_strict_json_becomes_an_error_reply(served: Served) -> None:
    served.handler = lambda conn, request: conn.send(protocol.ok(request["id"], float("nan")))
    client = served.connect()
    client.send(line("status", req_id=4))
    [reply] = served.replies(client, 1)
    assert reply["id"] == 4 and reply["error"]["code"] == protocol.FAILED


def test_a_failing_command_gets_an_internal_error_reply(served: Served) -> None:
    def broken(conn: Connection, request: Request) -> None:
        raise RuntimeError("boom")

    served.handler = broken
    client = served.connect()
    client.send(line("status", 5))
    assert served.replies(client, 1) == [protocol.error(
        5, protocol.FAILED, "internal error: RuntimeError: boom")]
    assert served.only_connection().outstanding == 0 and not client.eof


def test_a_line_over_the_size_limit_is_refused_and_the_connection_closed(
        served: Served) -> None:
    client = served.connect()
    data, sent = b"x" * (protocol.MAX_LINE + 10), 0
    deadline = time.monotonic() + 1.0
    while sent < len(data) and not client.eof and time.monotonic() < deadline:
        try:
            sent += client.send(data[sent:])
        except (BrokenPipeError, ConnectionResetError):
            break
        served.loop.run_once(max_wait=0.01)
        client.poll()
    served.until(lambda: client.eof)
    assert client.lines() == [protocol.error(
        None, protocol.TOO_LARGE, f"request longer than {protocol.MAX_LINE} bytes")]
    assert served.requests == [] and served.server.connections == {}


def test_half_close_still_gets_the_replies_owed(served: Served) -> None:
    served.handler = lambda conn, request: None  # answered later, as `update --wait` is
    client = served.connect()
    client.send(line("update", 6))
    client.sock.shutdown(socket.SHUT_WR)  # as socat does after the request
    served.until(lambda: len(served.requests) == 1)
    served.spin()
    conn = served.requests[0][0]
    assert not conn.closed and conn.outstanding == 1
    conn.send(protocol.stream(6, "progress"))  # not the final reply: stays open
    served.until(lambda: len(client.lines()) == 1)
    assert not conn.closed
    conn.send(protocol.ok(6, {"done": True}))
    served.until(lambda: client.eof)
    assert client.lines() == [protocol.stream(6, "progress"), protocol.ok(6, {"done": True})]
    assert conn.closed and served.server.connections == {}


def test_half_close_with_nothing_owed_closes_at_once(served: Served) -> None:
    client = served.connect()
    served.only_connection()
    client.sock.shutdown(socket.SHUT_WR)
    served.until(lambda: client.eof)
    assert client.data == b"" and served.server.connections == {}


def test_a_client_that_disconnects_runs_the_disconnect_callbacks(served: Served) -> None:
    gone: list[str] = []

    def subscribe(conn: Connection, request: Request) -> None:
        conn.on_disconnect.append(lambda: gone.append(request["cmd"]))
        conn.send(protocol.ok(request["id"], {}))

    served.handler = subscribe
    client = served.connect()
    client.send(line("subscribe", 7))
    served.until(lambda: len(client.lines()) == 1)
    conn = served.requests[0][0]
    client.sock.close()
    served.clients.remove(client)
    served.until(lambda: conn.closed)
    assert gone == ["subscribe"] and served.server.connections == {}
    conn.send(protocol.ok(8, {}))  # too late: dropped, nothing queued
    assert not conn.pending_output


def test_a_client_gone_while_owed_a_reply_is_closed_at_once(served: Served) -> None:
    gone: list[str] = []

    def follow(conn: Connection, request: Request) -> None:  # as `tail -f` does
        conn.on_disconnect.append(lambda: gone.append(request["cmd"]))

    served.handler = follow
    client = served.connect()
    client.send(line("tail", 7, follow=True))
    served.until(lambda: len(served.requests) == 1)
    conn = served.requests[0][0]
    client.sock.close()
    served.clients.remove(client)
    # A full close, not a half-close: the follower and the descriptor go at once (they
    # used to wait for the next output, which an idle program may never write).
    served.until(lambda: conn.closed)
    assert gone == ["tail"] and served.server.connections == {}


def test_a_client_that_pipelines_more_than_it_reads_is_read_no_faster_than_it_reads(
        served: Served) -> None:
    big = "x" * 64 * 1024  # a reply of 64 KiB, a large program's status
    served.handler = lambda conn, request: conn.send(protocol.ok(request["id"], {"big": big}))
    client = served.connect()
    client.send(b"".join(line("status", n) for n in range(100)))
    conn_backlog: list[int] = []
    for _ in range(20):  # the client reads nothing
        served.loop.run_once(max_wait=0.01)
        conn_backlog += [len(c._wbuf) for c in served.server.connections.values()]
    # Reading stopped once a megabyte of replies waited: the rest of the requests wait in
    # the socket, and the master's buffer stays near the pause mark, not 6.4 MB.
    assert 0 < len(served.requests) < 100
    assert max(conn_backlog) < control_server.READ_PAUSE + 2 * len(big)
    def read_all() -> bool:
        client.poll()
        return client.data.count(b"\n") == 100

    served.until(read_all, timeout=5.0)  # it reads: every reply comes, in order
    assert [reply["id"] for reply in client.lines()] == list(range(100))


def test_a_follower_that_never_reads_is_dropped_at_the_write_limit(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_server, "WRITE_LIMIT", 4 * 1024 * 1024)
    gone: list[str] = []

    def follow(conn: Connection, request: Request) -> None:  # as `tail -f` does
        conn.on_disconnect.append(lambda: gone.append(request["cmd"]))

    served.handler = follow
    client = served.connect()
    client.send(line("tail", 7, follow=True))
    served.until(lambda: len(served.requests) == 1)
    conn = served.requests[0][0]
    chunk = {"id": 7, "stream": {"data": "y" * 64 * 1024}}
    for _ in range(200):  # 12.8 MB of output the client never reads
        conn.send(chunk)
        served.loop.run_once(max_wait=0)
        if conn.closed:
            break
    assert conn.closed and gone == ["tail"] and served.server.connections == {}


def test_close_after_flush_sends_what_is_queued_first(served: Served) -> None:
    served.handler = lambda conn, request: None
    client = served.connect()
    client.send(line("shutdown", 8))
    served.until(lambda: len(served.requests) == 1)
    conn = served.requests[0][0]
    conn.send(protocol.ok(8, {"stopped": True}))
    assert conn.pending_output
    conn.close_after_flush()
    assert not conn.closed
    served.until(lambda: client.eof)
    assert client.lines() == [protocol.ok(8, {"stopped": True})]
    assert conn.closed and not conn.pending_output
    idle = served.connect()
    quiet = served.only_connection()
    quiet.close_after_flush()  # nothing queued: closes now
    assert quiet.closed
    served.until(lambda: idle.eof)


def test_a_peer_the_policy_excludes_is_refused(served: Served) -> None:
    served.server.policy = PeerPolicy(frozenset({4242}), frozenset({4243}))
    client = served.connect()
    client.send(line("status", 1))
    served.until(lambda: client.eof)
    reply, = client.lines()
    assert reply["error"]["code"] == protocol.REFUSED
    assert reply["error"]["message"].startswith(f"uid {os.getuid()} is not allowed")
    assert served.requests == [] and served.server.connections == {}


def test_stop_listening_removes_the_socket_and_keeps_open_connections(
        served: Served) -> None:
    client = served.connect()
    served.only_connection()
    served.server.stop_listening()
    assert not os.path.exists(served.server.path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late:
        with pytest.raises(OSError):
            late.connect(served.server.path)
    client.send(line("status", 2))
    assert served.replies(client, 1) == [protocol.ok(2, {"cmd": "status"})]


def test_a_stale_socket_file_is_replaced_and_the_mode_set(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    path.write_text("left by a daemon that died")
    server = ControlServer(str(path), 0o660, ME)
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    finally:
        server.sock.close()


def test_peer_policy_allows_listed_uids_and_gids() -> None:
    policy = PeerPolicy(frozenset({1000}), frozenset({50}))
    stranger = PID_BASE + 1  # no /proc entry: the group database is asked instead
    assert policy.allows(stranger, 1000, 7)
    assert policy.allows(stranger, 4242, 50)
    assert not policy.allows(stranger, 4242, 7)  # no such user: only gid 7 is known
    assert not PeerPolicy(frozenset({1000}), frozenset()).allows(stranger, 0, 0)


def test_peer_policy_sees_supplementary_groups_in_the_group_database() -> None:
    member: tuple[int, int] | None = None
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_gid != group.gr_gid:
                member = (user.pw_uid, group.gr_gid)
    if member is None:
        pytest.skip("no user with a supplementary group in this group database")
    uid, gid = member
    stranger = PID_BASE + 1
    assert PeerPolicy(frozenset(), frozenset({gid})).allows(stranger, uid, 65534)
    assert not PeerPolicy(frozenset(), frozenset({4243})).allows(stranger, uid, 65534)


def test_peer_policy_reads_a_live_peers_groups_from_proc() -> None:
    mine = set(os.getgroups())
    unused = max(mine | {os.getgid(), 65534}) + 1
    assert not PeerPolicy(frozenset(), frozenset({unused})).allows(os.getpid(), 4242, 4242)
    for gid in mine:
        assert PeerPolicy(frozenset(), frozenset({gid})).allows(os.getpid(), 4242, 4242)


def test_from_names_adds_root_and_the_daemons_user_and_skips_unknown_names() -> None:
    policy = PeerPolicy.from_names(("daemon", "qsv-no-such-user"), ("adm", "qsv-no-such-group"))
    assert policy.uids == {0, os.getuid(), pwd.getpwnam("daemon").pw_uid}
    assert policy.gids == {grp.getgrnam("adm").gr_gid}
    assert PeerPolicy.from_names((), ()) == PeerPolicy(frozenset({0, os.getuid()}), frozenset())


def test_out_of_descriptors_the_listener_pauses_instead_of_spinning(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """An accept that fails with EMFILE leaves the connection in the backlog, so the
    listener stays readable: retried at once, it spun (600,000 warnings in 8 s)."""
    failures: list[OSError] = []
    real = served.server._accept_failed
    monkeypatch.setattr(served.server, "_accept_failed",
                        lambda exc: (failures.append(exc), real(exc)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
    client = served.connect()
    ballast: list[int] = []

    def take_every_descriptor_left() -> None:  # again each round: a collected socket frees one
        while True:
            try:
                ballast.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                return

    try:
        deadline = time.monotonic() + 0.35
        while time.monotonic() < deadline:
            take_every_descriptor_left()
            served.loop.run_once(max_wait=0.05)
    finally:
        for fd in ballast:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert failures and all(e.errno == errno.EMFILE for e in failures)
    # One try per pause of 0.1 s, not thousands (12,557 in 0.35 s without the pause). A
    # descriptor some other object frees meanwhile may let one accept through early.
    assert len(failures) <= 6
    served.until(lambda: len(served.server.connections) == 1)  # descriptors back: accepted
    client.send(line("status", req_id=9))
    assert served.replies(client, 1) == [protocol.ok(9, {"cmd": "status"})]
