"""The bare loop a command program is measured against: a plain pika consumer that runs
the command for each message with `subprocess.run(argv, input=body)` and acks it when it
exited 0 (nacks it to the dead-letter side otherwise). No qsupervisor: the physical limit
of one fork and exec per message with a broker in the loop. SIGTERM ends it.

    python command_consumer.py --queue QUEUE --prefetch 10 -- /bin/true

With --no-broker it runs the command COUNT times with the same body instead, prints
{"jobs": COUNT, "seconds": ...} as JSON and exits: the same loop without the broker.

    python command_consumer.py --no-broker 2000 -- /bin/true
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

BODY = json.dumps({"n": 0, "kind": "bench", "ok": True}).encode()  # as the runner publishes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue")
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--no-broker", type=int, default=0, metavar="COUNT",
                        help="run the command COUNT times, print the time, exit")
    parser.add_argument("argv", nargs="+", help="the command, after --")
    args = parser.parse_args()
    argv = args.argv
    if not args.no_broker and not args.queue:
        parser.error("--queue or --no-broker is required")

    if args.no_broker:
        subprocess.run(argv, input=BODY, check=True)  # warm the page cache, not counted
        started = time.perf_counter()
        for _ in range(args.no_broker):
            subprocess.run(argv, input=BODY, check=True)
        print(json.dumps({"jobs": args.no_broker, "seconds": time.perf_counter() - started}))
        return

    import pika

    conn = pika.BlockingConnection(pika.URLParameters(args.broker))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=args.prefetch)

    def on_message(ch, method, properties, body):
        if subprocess.run(argv, input=body).returncode == 0:
            ch.basic_ack(method.delivery_tag)
        else:
            ch.basic_nack(method.delivery_tag, requeue=False)

    channel.basic_consume(args.queue, on_message)
    channel.start_consuming()  # until SIGTERM ends the process; the broker requeues the rest


if __name__ == "__main__":
    sys.exit(main())
