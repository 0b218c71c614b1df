"""`qsupervisorctl`: parse the command line, make one request, render the reply.

Exit codes: 0 success; 1 the command failed; 2 usage or configuration error; 3 `status`
found a named program with a worker that is not RUNNING; 4 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from qsupervisor.config.control import read_control_settings
from qsupervisor.config.defaults import DEFAULT_CONFIG_PATH, DEFAULT_SOCKET
from qsupervisor.control import protocol
from qsupervisor.control.help import COMMAND_HELP
from qsupervisor.ctl import broker_parsers, render
from qsupervisor.ctl.client import Client, CommandFailed, Unreachable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsupervisorctl",
                                     description="Control a running qsupervisord.")
    parser.add_argument("-c", "--config", default=None,
                        help=f"configuration file to find the socket in (default: {DEFAULT_CONFIG_PATH})")
    parser.add_argument("-s", "--socket", default=None, help="control socket path (overrides -c)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for a reply (default: no limit)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_daemon_commands(sub)
    broker_parsers.add_parsers(sub)
    return parser


def _add_command(sub: Any, name: str, wait: bool = False) -> argparse.ArgumentParser:
    help_text = COMMAND_HELP[name]
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    # Also after the command (`status --json`), where people put it; SUPPRESS keeps
    # the subcommand from resetting a --json given before it.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the reply as JSON")
    if wait:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--wait", dest="wait", action="store_true", default=True,
                           help="return when the operation is complete (default)")
        group.add_argument("--no-wait", dest="wait", action="store_false",
                           help="return as soon as the daemon has accepted the request")
    return p


def _add_daemon_commands(sub: Any) -> None:
    """The commands the daemon answers over its control socket."""
    p = _add_command(sub, "status")
    p.add_argument("names", nargs="*", metavar="PROGRAM")
    p.add_argument("-b", "--brief", action="store_true",
                   help="totals per program instead of a line per worker")
    for name in ("start", "stop", "restart"):
        _add_command(sub, name, wait=True).add_argument("names", nargs="+", metavar="PROGRAM|all")
    p = _add_command(sub, "reload", wait=True)
    p.add_argument("names", nargs="+", metavar="PROGRAM|all")
    p.add_argument("--preload", action="store_true",
                   help="replace the leader first, so preloaded modules are fresh too")
    p = _add_command(sub, "scale", wait=True)
    p.add_argument("name", metavar="PROGRAM")
    p.add_argument("workers", type=int, metavar="N", nargs="?")
    p.add_argument("--auto", action="store_true",
                   help="hand an autoscaled program back to its autoscaler (undoes N)")
    _add_command(sub, "reread")
    _add_command(sub, "update", wait=True).add_argument("names", nargs="*", metavar="PROGRAM")
    p = _add_command(sub, "signal")
    p.add_argument("name", metavar="PROGRAM")
    p.add_argument("signal", metavar="SIG")
    _add_command(sub, "pid").add_argument("names", nargs="*", metavar="PROGRAM")
    p = _add_command(sub, "tail")
    p.add_argument("name", metavar="PROGRAM")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-n", "--lines", type=int, default=10, help="lines to show (default 10)")
    _add_command(sub, "reopen")
    _add_command(sub, "shutdown", wait=True)
    p = _add_command(sub, "fleet")
    p.add_argument("--program", metavar="PROGRAM", default=None,
                   help="only the daemons that run this program, with it alone")
    p = _add_command(sub, "reexec")
    p.add_argument("--all", action="store_true", dest="all_tiers",
                   help="then reload every program with --preload, one at a time, so "
                        "leaders and workers run the new code too")
    _add_command(sub, "version")


def request_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cmd = args.command
    req: dict[str, Any] = {}
    if hasattr(args, "names"):
        req["names"] = args.names
    if hasattr(args, "name"):
        req["names"] = [args.name]
    if hasattr(args, "wait"):
        req["wait"] = args.wait
    if cmd == "status" and args.brief:
        req["workers"] = False
    elif cmd == "reload":
        req["preload"] = args.preload
    elif cmd == "scale" and args.auto:
        req["auto"] = True
    elif cmd == "scale":
        req["workers"] = args.workers
    elif cmd == "signal":
        req["signal"] = args.signal
    elif cmd == "tail":
        req.update(lines=args.lines, follow=args.follow)
    elif cmd == "reexec":
        req["all"] = args.all_tiers
    elif cmd == "fleet" and args.program:
        req["program"] = args.program
    return cmd, req


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    config = args.config or os.environ.get("QSUPERVISOR_CONFIG") or DEFAULT_CONFIG_PATH
    if os.path.exists(config) and not os.access(config, os.R_OK):
        # Say so: otherwise a custom socket path silently becomes the default one.
        print(f"qsupervisorctl: cannot read {config}; trying the default socket "
              f"(use -s SOCKET, or join the group that may read it)", file=sys.stderr)
    try:
        return read_control_settings(config)[0]
    except FileNotFoundError:
        if args.config:
            raise
        return DEFAULT_SOCKET


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "scale" and (args.workers is None) == (not args.auto):
        parser.error("scale takes a worker count N or --auto, not both")
    if args.command in broker_parsers.COMMANDS:  # these talk to RabbitMQ, not the daemon
        from qsupervisor.ctl import (
            broker_commands,  # pika and the loader: only when needed
        )

        return broker_commands.run(args)
    try:
        path = socket_path(args)
    except FileNotFoundError:
        print(f"qsupervisorctl: {args.config}: no such file", file=sys.stderr)
        return EXIT_USAGE
    cmd, req = request_for(args)
    client = Client(path, timeout=args.timeout)
    on_stream = _print_stream if cmd == "tail" else None
    try:
        result = client.call(cmd, req, on_stream=on_stream,
                             until_eof=cmd == "shutdown" and req.get("wait", False))
    except Unreachable as exc:
        print(f"qsupervisorctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except CommandFailed as exc:
        print(f"qsupervisorctl: {exc.message}", file=sys.stderr)
        return protocol.EXIT_CODES.get(exc.code, EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_OK if cmd == "tail" else EXIT_FAILED
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        text = render.render(cmd, result)
        if text:
            print(text)
    return exit_code(cmd, req, result)


def exit_code(cmd: str, req: dict[str, Any], result: Any) -> int:
    if cmd == "status":
        names = req.get("names") or []
        if "all" in names:
            names = list(result.get("programs", {}))
        return EXIT_NOT_RUNNING if render.not_running(result, names) else EXIT_OK
    if cmd == "fleet":  # a view from before a broker outage, or none: scripts must notice
        return EXIT_OK if result.get("available") and result.get("connected") else EXIT_FAILED
    programs = result.get("programs") if isinstance(result, dict) else None
    if isinstance(programs, dict) and cmd != "status":
        if any(isinstance(o, dict) and o.get("ok") is False for o in programs.values()):
            return EXIT_FAILED
    return EXIT_OK


def _print_stream(item: Any) -> None:
    sys.stdout.write(item.get("data", "") if isinstance(item, dict) else str(item))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
