"""The herald process: forked by the master at start, alive as long as the daemon.

It holds the daemon's one long-lived broker connection of its own (leaders only open
short ones, and the master none), so a broker that hangs stalls the herald and never the
master. Each interval the master sends it a summary; the herald reads the programs' queue
depths on its connection, publishes the announcement to the fleet exchange, and consumes
every daemon's announcements through a queue of its own, keeping the latest of each in a
FleetTable that the master asks for on `fleet`.

One thread: pika's BlockingConnection is driven in short slices (POLL), with the master's
channel read between them, so a `fleet` question waits at most a slice.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from setproctitle import setproctitle

from qsupervisor import ipc, logs, procutil
from qsupervisor.broker.connection import BrokerNodes, BrokerUnreachable, describe_error
from qsupervisor.channel import Ev, Op
from qsupervisor.config import DaemonConfig
from qsupervisor.exit_codes import EXIT_INTERNAL_ERROR
from qsupervisor.herald import announce
from qsupervisor.herald.table import FleetTable

log = logs.get("qsupervisor.herald")

EXCHANGE = "qsupervisor.fleet"
POLL = 0.2  # seconds per slice of broker I/O between reads of the master's channel
CONNECT_TIMEOUT = 2.0  # seconds; the master waits for a `fleet` answer a little longer
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between connection attempts, doubling
# The queue's own bounds, on top of each message's expiration: nothing piles up in it
# even while the herald is slow, and it goes with the connection (exclusive).
QUEUE_ARGUMENTS = {"x-message-ttl": 60_000, "x-expires": 60_000, "x-max-length": 10_000}
MAX_REPLY = ipc.MAX_MESSAGE - 16 * 1024  # room for the envelope


@dataclass(frozen=True)
class HeraldSpec:
    daemon: DaemonConfig
    log_format: str


def fork_herald(daemon: DaemonConfig, log_format: str, sock: socket.socket,
                log_stream: Any = None) -> int:
    """Fork the herald and return its pid (the master's `start_herald`); the child never
    returns. `log_stream`: the daemon's log, which the herald writes to and reopens."""
    pid = os.fork()
    if pid == 0:
        run(HeraldSpec(daemon, log_format), sock, log_stream)
    return pid


def run(spec: HeraldSpec, sock: socket.socket, log_stream: Any = None) -> NoReturn:
    code = EXIT_INTERNAL_ERROR
    try:
        keep = {sock.fileno()}
        if log_stream is not None and hasattr(log_stream, "fileno"):
            keep.add(log_stream.fileno())
        procutil.close_fds_except(keep)
        setproctitle("qsupervisord: herald")
        procutil.reset_signals()  # SIGTERM ends it at once: it holds nothing to finish
        procutil.restore_open_files_limit()
        procutil.die_with_parent(signal.SIGTERM)
        logs.bind(role="herald")
        code = Herald(spec.daemon, sock, getattr(log_stream, "reopen", None)).main()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


class Herald:
    def __init__(self, daemon: DaemonConfig, sock: socket.socket,
                 reopen_log: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.daemon = daemon
        self.sock = sock
        self.reopen_log = reopen_log
        self.clock = clock
        self.table = FleetTable()
        self.nodes = BrokerNodes(daemon.broker)
        self.conn: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.error: str | None = "not connected yet"
        self.since = clock()  # when the connection came or went
        self.retry_at = 0.0
        self.retry_delay = RETRY_FIRST
        self.master_gone = False

    def main(self) -> int:
        while not self.master_gone:
            if self.conn is None and self.clock() >= self.retry_at:
                self._connect()
            if self.conn is not None:
                self._broker_slice()
            else:
                ipc.readable(self.sock, max(0.0, min(POLL, self.retry_at - self.clock())))
            while not self.master_gone and ipc.readable(self.sock):
                self._on_master()
        self._disconnect()
        return 0

    # -- the broker ----------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            conn, _url = self.nodes.connect(name="qsupervisor herald", tune=_tune)
        except BrokerUnreachable as exc:
            self._lost(str(exc))
            return
        try:
            channel = conn.channel()
            channel.exchange_declare(EXCHANGE, "fanout", durable=False, auto_delete=False)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True,
                                          arguments=QUEUE_ARGUMENTS).method.queue
            channel.queue_bind(queue, EXCHANGE)
            channel.basic_consume(queue, self._on_announcement, auto_ack=True)
        except (pika.exceptions.AMQPError, OSError) as exc:
            _close(conn)
            self._lost(f"cannot set up the fleet exchange and queue: {describe_error(exc)}")
            return
        self.conn, self.channel = conn, channel
        if self.error is not None:
            log.info("fleet view connected", exchange=EXCHANGE)
        self.error, self.since, self.retry_delay = None, self.clock(), RETRY_FIRST

    def _lost(self, error: str) -> None:
        """Drop the connection; try again after the backoff."""
        was_connected = self.conn is not None
        if was_connected or self.error == "not connected yet":  # once per outage, not per try
            log.warning("fleet view: no broker connection; retrying", error=error,
                        retry_in=self.retry_delay)
        if was_connected:
            self.since = self.clock()
        self._disconnect()
        self.error = error
        self.retry_at = self.clock() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)

    def _disconnect(self) -> None:
        if self.conn is not None:
            _close(self.conn)
        self.conn = self.channel = None

    def _broker_slice(self) -> None:
        assert self.conn is not None
        try:
            self.conn.process_data_events(time_limit=POLL)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._lost(f"lost the broker: {describe_error(exc)}")

    def _on_announcement(self, _channel: Any, _method: Any, _props: Any, body: bytes) -> None:
        heard = announce.decode(body)
        if heard is not None:
            self.table.heard(heard, self.clock())

    def _publish(self, summary: dict[str, Any]) -> None:
        if self.conn is None or self.channel is None:
            return
        try:
            depths = self._depths(summary)
            body = announce.encode(summary, depths, time.time())
            interval = float(summary.get("interval") or 5.0)
            # Worthless once a reader would call us stale anyway.
            expiration = str(max(1, int(interval * 3 * 1000)))
            self.channel.basic_publish(EXCHANGE, "", body, pika.BasicProperties(
                delivery_mode=1, expiration=expiration, content_type="application/json",
                type=announce.MESSAGE_TYPE))
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._lost(f"cannot publish the announcement: {describe_error(exc)}")

    def _depths(self, summary: dict[str, Any]) -> dict[str, int | None]:
        """Ready messages of each program's queue, read on a channel of their own: a
        passive declaration of a missing queue closes the channel it is made on."""
        assert self.conn is not None
        depths: dict[str, int | None] = {}
        channel = self.conn.channel()
        try:
            for program in summary.get("programs") or []:
                queue = program.get("queue")
                if not isinstance(queue, str) or queue in depths:
                    continue
                try:
                    ok = channel.queue_declare(queue, passive=True)
                    depths[queue] = ok.method.message_count
                except pika.exceptions.ChannelClosedByBroker:
                    depths[queue] = None
                    channel = self.conn.channel()
        finally:
            if channel.is_open:
                channel.close()
        return depths

    # -- the master ------------------------------------------------------------------------

    def _on_master(self) -> None:
        try:
            msg = ipc.recv_message(self.sock)
        except BlockingIOError:
            return
        if msg is None:
            self.master_gone = True
            return
        op = msg.get("op")
        if op == Op.ANNOUNCE:
            self._publish(msg.get("summary") or {})
        elif op == Op.FLEET:
            self._send({"ev": Ev.FLEET, "rid": msg.get("rid"), **self.fleet()})
        elif op == Op.REOPEN and self.reopen_log is not None:
            self.reopen_log()
        else:
            log.warning("unexpected message from the master", op=op)

    def fleet(self) -> dict[str, Any]:
        """The answer to `fleet`: every daemon remembered, and whether the picture is
        current (connected) or what was last heard before the broker went away."""
        now = self.clock()
        nodes = self.table.view(now)
        truncated = 0
        # A channel message has a size bound; a fleet that outgrows it loses its tail.
        while nodes and len(ipc.encode({"nodes": nodes})) > MAX_REPLY:
            cut = max(1, len(nodes) // 10)
            del nodes[-cut:]
            truncated += cut
        return {"connected": self.conn is not None, "error": self.error,
                "since": round(now - self.since, 3), "nodes": nodes, "truncated": truncated}

    def _send(self, msg: ipc.Message) -> None:
        try:
            ipc.send(self.sock, msg)
        except OSError:
            self.master_gone = True


def _tune(params: pika.URLParameters) -> None:
    params.socket_timeout = CONNECT_TIMEOUT
    params.stack_timeout = CONNECT_TIMEOUT  # the whole handshake: a hung broker too
    params.connection_attempts = 1
    # A broker that blocks publishers (a memory alarm) must not hold the herald: it
    # drops the connection and tries again later.
    params.blocked_connection_timeout = 10.0


def _close(conn: pika.BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except (pika.exceptions.AMQPError, OSError):
        pass
