"""RabbitMQ nodes of the fault suite's own, so that it can stop, kill and restart brokers
without touching the machine's RabbitMQ (the one the other suites share on port 5672).

Each node runs from /usr/lib/rabbitmq/bin directly, as the user running the tests: the
/usr/sbin wrappers `su` to the rabbitmq user and `cd /var/lib/rabbitmq`, and that user
could neither write our temporary directory nor read our cookie. Everything a node writes
lives under its own directory; the Erlang cookie lives in a HOME shared by the suite's
nodes and its rabbitmqctl calls (nodes of one cluster must share it).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
START_DEADLINE = 120.0  # seconds; a node boots in about 10 s on a loaded 2-core machine
CTL_TIMEOUT = 120.0


class NodeError(RuntimeError):
    """A node did not do what it was asked (start, stop, join)."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_home(root: Path) -> Path:
    """The HOME of the suite's nodes and rabbitmqctl calls: a fresh Erlang cookie, which
    Erlang insists is readable by its owner only."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    return home


@dataclass
class RabbitNode:
    """One RabbitMQ node on loopback: its own node name, AMQP port, distribution port and
    directory (data, logs, config, enabled plugins, pid file)."""

    short_name: str
    home: Path
    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)

    @property
    def node(self) -> str:
        return f"{self.short_name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbitmq.pid"

    def prepare(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        # Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
        (self.base / "rabbitmq-env.conf").write_text("")

    def env(self) -> dict[str, str]:
        base = str(self.base)
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": f"{base}/rabbitmq-env.conf",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{base}/mnesia",
            "RABBITMQ_LOG_BASE": f"{base}/log",
            "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins",
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    # -- rabbitmqctl ----------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = True, timeout: float = CTL_TIMEOUT) -> str:
        proc = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
                              capture_output=True, text=True, timeout=timeout,
                              env=self.env())
        if check and proc.returncode != 0:
            raise NodeError(f"rabbitmqctl -n {self.node} {' '.join(args)} -> exit "
                            f"{proc.returncode}: {proc.stdout} {proc.stderr}")
        return proc.stdout

    def await_startup(self) -> None:
        """await_startup fails at once while the VM is not registered yet: try again."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                self.ctl("-q", "await_startup", timeout=START_DEADLINE)
                return
            except (NodeError, subprocess.TimeoutExpired) as exc:
                if time.monotonic() >= deadline:
                    raise NodeError(f"{self.node} did not start: {exc}\n{self.log_tail()}") \
                        from None
            time.sleep(0.5)

    # -- the node's life ------------------------------------------------------------------

    def boot(self) -> None:
        """Start the Erlang VM and RabbitMQ in the background; returns before it serves."""
        self.prepare()
        proc = subprocess.run([str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
                              capture_output=True, text=True, timeout=CTL_TIMEOUT,
                              env=self.env(), cwd=str(self.base))
        if proc.returncode != 0:
            raise NodeError(f"rabbitmq-server -detached for {self.node}: {proc.stderr}")

    def start(self) -> None:
        """Start the node and wait until it serves AMQP."""
        self.boot()
        self.await_startup()

    def stop_app(self) -> None:
        """Stop RabbitMQ, the VM staying up: every connection drops, the port refuses."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.await_startup()

    def vm_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill_vm(self) -> None:
        """kill -9 of the node's Erlang VM (beam.smp): no goodbye to any client."""
        pid = self.vm_pid()
        if pid is None:
            raise NodeError(f"no pid file for {self.node}")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the whole node (VM included); kill -9 if it will not go."""
        pid = self.vm_pid()
        try:
            self.ctl("stop", timeout=60)
        except (NodeError, subprocess.TimeoutExpired):
            pass
        if pid is not None and _running(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        if not logs:
            return "(no log)"
        return "\n".join(logs[0].read_text(errors="replace").splitlines()[-lines:])


def _running(pid: int) -> bool:
    """True while `pid` is a live process (a zombie is not: it is only waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def start_nodes(nodes: list[RabbitNode]) -> None:
    """Boot several nodes at once (their boots overlap), then wait for each."""
    for node in nodes:
        node.boot()
    for node in nodes:
        node.await_startup()


def form_cluster(nodes: list[RabbitNode]) -> None:
    """Join every node after the first to the first's cluster (all disc nodes)."""
    first = nodes[0]
    for node in nodes[1:]:
        node.ctl("stop_app")
        node.ctl("join_cluster", first.node)
        node.start_app()
    running = first.ctl("-q", "eval", "length(rabbit_nodes:all_running()).").strip()
    if running != str(len(nodes)):
        raise NodeError(f"cluster of {first.node}: {running} nodes running, not {len(nodes)}")
