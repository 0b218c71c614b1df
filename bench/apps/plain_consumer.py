"""The baseline: a plain pika consumer process, as anyone would write it without
qsupervisor. BlockingConnection, basic_qos(prefetch), basic_consume, decode the JSON body,
run the job on the I/O thread, manual ack. SIGTERM ends it.

    python plain_consumer.py QUEUE --prefetch 10 --job noop [--preload mod1,mod2]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_handlers  # noqa: E402
import pika  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("queue")
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--job", default="noop", choices=sorted(bench_handlers.JOBS))
    parser.add_argument("--preload", default="", help="comma-separated modules to import")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    for module in filter(None, args.preload.split(",")):
        importlib.import_module(module)
    job = bench_handlers.JOBS[args.job]

    conn = pika.BlockingConnection(pika.URLParameters(args.broker))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=args.prefetch)

    def on_message(ch, method, properties, body):
        job(json.loads(body))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(args.queue, on_message)
    channel.start_consuming()  # until SIGTERM ends the process; the broker requeues the rest


if __name__ == "__main__":
    main()
