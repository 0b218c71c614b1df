"""`qsupervisord`: validate the configuration, claim the socket and pidfile, then run the
master (in the foreground with -n, detached otherwise).

Everything that can fail for a reason the operator must hear about (configuration, a live
daemon, the socket) happens before detaching, while stderr still reaches a terminal.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any, NoReturn

from qsupervisor import __version__, logs, systemd
from qsupervisor.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from qsupervisor.daemon import pidfile
from qsupervisor.master.control_server import ControlServer, PeerPolicy
from qsupervisor.master.metrics_server import MetricsServer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsupervisord", description="Supervise RabbitMQ queue workers named in a YAML file.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH,
                        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    parser.add_argument("-n", "--nodaemon", action="store_true",
                        help="stay in the foreground (for systemd: Type=notify)")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"qsupervisord {__version__}")
    # Internal, for `qsupervisorctl reexec` (master/reexec.py): take over, or only check,
    # the state a running master hands over in this descriptor.
    parser.add_argument("--resume", type=int, metavar="FD", help=argparse.SUPPRESS)
    parser.add_argument("--check-resume", type=int, metavar="FD", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_resume is not None:
        return _check_resume(args.check_resume, args.config)
    if args.resume is not None:
        return _resume(args.resume)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"{args.config}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(f"{args.config}: OK ({len(config.programs)} programs)")
        return EXIT_OK
    try:
        server = _claim(config)
    except (pidfile.AlreadyRunning, OSError) as exc:
        print(f"qsupervisord: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        metrics = _bind_metrics(config)
    except OSError as exc:
        print(f"qsupervisord: metrics: cannot listen on {config.daemon.metrics.listen}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        server.sock.close()
        os.unlink(server.path)
        return EXIT_FAILED
    systemd.take_notify_socket()
    if args.nodaemon and config.daemon.logfile != "-":
        # In the foreground the terminal is the first place people look.
        print(f"qsupervisord: pid {os.getpid()}, {len(config.programs)} programs; log "
              f"{config.daemon.logfile}, worker output in {config.daemon.log_dir}; control "
              f"socket {config.daemon.socket}", file=sys.stderr, flush=True)
    if not args.nodaemon:
        if config.daemon.logfile == "-":
            print("qsupervisord: warning: logfile is '-' (stderr), which a detached daemon "
                  "closes: its log goes nowhere; run with -n or set a logfile", file=sys.stderr)
        _daemonize(server, metrics)
    return _run(config, server, metrics)


def _claim(config: Config) -> ControlServer:
    daemon = config.daemon
    for directory in {os.path.dirname(daemon.socket), os.path.dirname(daemon.pidfile),
                      daemon.log_dir}:
        os.makedirs(directory, exist_ok=True)
    if daemon.logfile != "-":
        os.makedirs(os.path.dirname(daemon.logfile), exist_ok=True)
    pidfile.check(daemon.pidfile)
    if _socket_answers(daemon.socket):
        raise pidfile.AlreadyRunning(f"another qsupervisord listens on {daemon.socket}")
    policy = PeerPolicy.from_names(daemon.allow_users, daemon.allow_groups)
    return ControlServer(daemon.socket, daemon.socket_mode, policy)


def _bind_metrics(config: Config) -> MetricsServer | None:
    """Bound here, before detaching, so that a port in use is an error the operator sees."""
    settings = config.daemon.metrics
    return MetricsServer(settings.host, settings.port) if settings.enabled else None


def _socket_answers(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False  # a socket file left by a daemon that died


def _daemonize(server: ControlServer, metrics: MetricsServer | None) -> None:
    import daemon  # python-daemon; only the detached mode needs it

    context = daemon.DaemonContext(
        umask=0o027, working_directory="/", detach_process=True,
        files_preserve=[server.sock.fileno()] + ([metrics.sock.fileno()] if metrics else []),
        signal_map={},  # the master installs its own handlers
    )
    context.open()


def _check_resume(fd: int, config_path: str) -> int:
    """The pre-flight of a re-exec, run with the new code: its exit status and output are
    the running master's answer."""
    try:
        why = _resume_problem(fd, config_path)
    except Exception:  # a broken install: whatever it is, the old master must hear it
        import traceback

        traceback.print_exc()
        return EXIT_FAILED
    if why is not None:
        print(why, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _resume_problem(fd: int, config_path: str) -> str | None:
    """What the new code would do with the state, short of taking over a single
    descriptor: why it cannot (None: it can)."""
    # Every tier the daemon runs: a broken module anywhere must fail here, not after.
    import qsupervisor.herald.main  # noqa: F401
    import qsupervisor.leader.forkserver  # noqa: F401
    import qsupervisor.master.arbiter  # noqa: F401
    import qsupervisor.worker.main  # noqa: F401
    from qsupervisor.master.handover import HandoverError
    from qsupervisor.master.reexec import read_state

    try:
        state = read_state(fd)
    except HandoverError as exc:
        return str(exc)
    if state["config"]["path"] != os.path.abspath(config_path):
        return f"the state is for {state['config']['path']}, not {config_path}"
    try:
        config = load_config(state["config"]["path"], check_writable=False,
                             texts=state["config"]["texts"])
    except ConfigError as exc:
        return f"the applied configuration does not load in this version:\n{exc}"
    missing = [p["name"] for p in state["programs"] if p["name"] not in config.programs]
    if missing:
        return f"programs missing from the applied configuration: {', '.join(missing)}"
    return None


def _resume(fd: int) -> int:
    """The new image of a master that re-executed: same pid, the old image's sockets,
    children and records. Nothing is claimed or bound; the pidfile names this pid."""
    from qsupervisor.master.handover import adopt_socket
    from qsupervisor.master.reexec import read_state

    state = read_state(fd)
    config = load_config(state["config"]["path"], check_writable=False,
                         texts=state["config"]["texts"])
    daemon = config.daemon
    server = ControlServer(state["started_with"]["socket"], daemon.socket_mode,
                           PeerPolicy.from_names(daemon.allow_users, daemon.allow_groups),
                           listening=adopt_socket(int(state["control_fd"])))
    metrics = None
    if state["metrics_fd"] is not None:
        metrics = MetricsServer(daemon.metrics.host, daemon.metrics.port,
                                listening=adopt_socket(int(state["metrics_fd"])))
    systemd.use_notify_socket(state["notify_socket"])
    _run(config, server, metrics, state)


def _fork_leader(*args: Any) -> int:
    """The leader tier (and pika) is imported when the first leader is forked, not
    before: a re-executed master serves its socket without waiting for it (a start forks
    leaders at once anyway). Every leader forked later shares the import."""
    from qsupervisor.leader.forkserver import fork_leader

    return fork_leader(*args)


def _fork_herald(*args: Any) -> int:
    from qsupervisor.herald.main import fork_herald

    return fork_herald(*args)


def _run(config: Config, server: ControlServer, metrics: MetricsServer | None,
         resumed: dict[str, Any] | None = None) -> NoReturn:
    # After fork: keeps --check light. The launcher hands the master the leader's entry
    # point, so the master's own modules never import the leader tier (or pika).
    from qsupervisor.master.arbiter import Master
    from qsupervisor.master.reexec import StartedWith
    from qsupervisor.master.system import SystemProcesses

    daemon_cfg = config.daemon
    # A re-executed master keeps the files it was started with (reexec.StartedWith).
    started = (StartedWith(**resumed["started_with"]) if resumed is not None
               else StartedWith.of(daemon_cfg))
    stream: Any
    if started.logfile == "-":
        stream = logs.QuietStream(sys.stderr)
        reopen = lambda: None  # noqa: E731 - nothing to reopen on stderr
    else:
        stream = logs.ReopenableFile(started.logfile)
        reopen = stream.reopen
    log_format = started.log_format
    logs.configure(log_format, daemon_cfg.log_level, stream)
    logs.bind(role="master")
    pidfile.write(started.pidfile)
    # Children's output goes to files: JSON unless console was asked for explicitly.
    child_format = "console" if log_format == "console" else "json"
    # The herald writes to the daemon's own log, so it gets the stream (and reopens it).
    processes = SystemProcesses(_fork_leader, lambda daemon, fmt, sock: _fork_herald(
        daemon, fmt, sock, stream))
    master = Master(config, child_format, server, reopen, processes, metrics=metrics,
                    started_with=started)
    try:
        code = master.run(resumed)
    finally:
        pidfile.remove(started.pidfile)
    # Leave with the control connections still open: the kernel closes them as the process
    # dies, so a client waiting for EOF after `shutdown` knows the daemon is gone.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
