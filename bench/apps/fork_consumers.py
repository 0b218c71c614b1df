"""The floor under qsupervisor's start-up: a bare fork server. It imports pika once, then
forks N children that each open their own connection and consume (no supervision, no
logging, no control channel). SIGTERM to the parent ends the children too.

    python fork_consumers.py QUEUE N [--prefetch 10]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys

import pika


def child(queue: str, prefetch: int, broker: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
    conn = pika.BlockingConnection(pika.URLParameters(broker))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(ch, method, properties, body):
        json.loads(body)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    channel.start_consuming()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("queue")
    parser.add_argument("workers", type=int)
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    pids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            try:
                child(args.queue, args.prefetch, args.broker)
            finally:
                os._exit(0)
        pids.append(pid)

    def stop(*_):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
