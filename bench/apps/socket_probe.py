"""A client that keeps asking a qsupervisord's control socket, as fast as a small pause
allows, and records when each answer came: the `reexec` part reads from it how long the
socket did not answer. Each request is a new connection (as qsupervisorctl makes one):
a connection open across a re-exec is not handed over, so a long-lived one would measure
its own reconnection. A `version` request (no work in the master) each time, and every
`--status-every` seconds a `status` without worker entries or queue depths instead, whose
program `consuming` figure is kept.

    python socket_probe.py SOCKET OUT.json [--pause 0.002] [--status-every 0.05]

Prints "ready" after its first answer; runs until SIGTERM, then writes OUT.json:
{"probes": [[sent, answered, consuming], ...], "failures": [[sent, failed, "why"], ...]},
times from time.monotonic() (CLOCK_MONOTONIC, the same clock in every process of the
machine).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import time
from typing import Any

from qsupervisor.control import protocol

stopping = False


def _stop(signum: int, frame: Any) -> None:
    global stopping
    stopping = True


def ask(path: str, request: bytes, timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a reply")
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise RuntimeError(f"error reply: {reply.get('error')}")
    return reply


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("out")
    parser.add_argument("--pause", type=float, default=0.002)
    parser.add_argument("--status-every", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    version = protocol.encode(protocol.request("version", {}, 1))
    status = protocol.encode(protocol.request(
        "status", {"names": [], "workers": False, "queues": False}, 2))
    probes: list[list[Any]] = []
    failures: list[list[Any]] = []
    next_status = 0.0
    while not stopping:
        sent = time.monotonic()
        is_status = sent >= next_status
        try:
            reply = ask(args.socket, status if is_status else version, args.timeout)
        except (OSError, ValueError, RuntimeError) as exc:
            failures.append([sent, time.monotonic(), repr(exc)])
        else:
            answered = time.monotonic()
            consuming = None
            if is_status:
                next_status = answered + args.status_every
                programs = reply["result"]["programs"]
                consuming = sum(int(p["consuming"]) for p in programs.values())
            probes.append([sent, answered, consuming])
            if len(probes) == 1:
                print("ready", flush=True)
        time.sleep(args.pause)
    with open(args.out, "w") as f:
        json.dump({"probes": probes, "failures": failures}, f)


if __name__ == "__main__":
    main()
