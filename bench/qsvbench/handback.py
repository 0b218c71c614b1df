"""Handing back prefetched messages: what a stopping consumer spends giving back the N
messages it holds unacked but never started, each way, on the same broker in the same run.

For each queue type and N (10, 50, 200; --quick 2, 5): the queue is filled with N
messages, a consumer on its own connection (`basic_qos(prefetch_count=N)`,
`basic_consume`) waits until it holds all N unacked and cancels its consumer (as a
stopping worker does first, `_begin_stop`), then the N are given back and timed:

- `nack`: one `basic_nack(tag, requeue=True)` per message (a plain pika consumer that hands
  back; what qsupervisor does on a classic queue and on RabbitMQ 4.3+);
- `close`: closing the channel (a plain pika consumer that just stops);
- `copy`: `qsupervisor.broker.returns.return_as_copy` per message, as the worker's
  `_hand_back` calls it: a confirm-mode channel opened on the same connection beforehand,
  each copy published and confirmed, then the original acked.

`nack` and `copy` end with one synchronous round trip on the consuming channel
(`basic_qos`), so that the time covers the broker taking every frame, not pika writing
it; `close` is such a round trip itself. The ways alternate which goes first. After each
hand-back the consuming channel is closed, the queue counted by passive declare (N
expected) and emptied with `basic_get`, reading each message's id and x-delivery-count
(`returns.delivery_count`): lost = ids missing, duplicated = messages beyond one per id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pika

from qsupervisor.broker import returns

from .common import Broker, Settings, connect, median, ratio

METHODS = ("nack", "close", "copy")
# The classic queue is the reference: no delivery limit, so a nack is free there.
METHODS_BY_TYPE = {"quorum": METHODS, "classic": ("nack", "close")}
DEFAULT_SIZES = (10, 50, 200)
QUICK_SIZES = (2, 5)

Held = list[tuple[int, Any, bytes]]  # (delivery tag, properties, body)


def hold(conn: pika.BlockingConnection, queue: str, n: int) -> tuple[Any, Held]:
    """A new channel holding all N messages of `queue` unacked, its consumer cancelled."""
    channel = conn.channel()
    channel.basic_qos(prefetch_count=n)
    held: Held = []

    def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
        held.append((method.delivery_tag, properties, body))

    tag = channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + 60
    while len(held) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"held {len(held)} of {n} messages of {queue} after 60 s")
        conn.process_data_events(time_limit=0.05)
    channel.basic_cancel(tag)
    if len(held) != n:
        raise RuntimeError(f"expected {n} deliveries from {queue}, got {len(held)}")
    return channel, held


def give_back(method: str, channel: Any, confirms: Any, queue: str, n: int,
              held: Held) -> float:
    """Seconds it takes to give back every held message `method`'s way."""
    started = time.perf_counter()
    if method == "nack":
        for tag, _, _ in held:
            channel.basic_nack(tag, multiple=False, requeue=True)
        channel.basic_qos(prefetch_count=n)  # a round trip: the broker has every nack
    elif method == "close":
        channel.close()
    elif method == "copy":
        for tag, properties, body in held:
            returns.return_as_copy(confirms, channel, queue, tag, properties, body)
        channel.basic_qos(prefetch_count=n)  # a round trip: the broker has the last ack
    else:
        raise ValueError(f"unknown way to give back: {method}")
    return time.perf_counter() - started


def check(broker: Broker, queue: str, n: int) -> dict[str, Any]:
    """Count the queue (passive declare), then empty it reading every message: what was
    lost or duplicated and the x-delivery-counts the returned messages carry."""
    deadline = time.monotonic() + 30
    while broker.depth(queue)[0] < n and time.monotonic() < deadline:
        time.sleep(0.02)  # a quorum queue takes returns asynchronously
    time.sleep(0.1)  # a late return (a duplicate) would show here
    count = broker.depth(queue)[0]
    ids: list[str] = []
    counts: list[int] = []
    for _ in range(2):  # again after a pause: nothing may turn up after the first pass
        while True:
            method, properties, _body = broker.channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            ids.append(str(properties.message_id))
            counts.append(returns.delivery_count(properties))
        time.sleep(0.1)
    expected = {f"m{i}" for i in range(n)}
    return {"count": count, "read": len(ids), "lost": len(expected - set(ids)),
            "duplicated": len(ids) - len(set(ids) & expected),
            "delivery_count_min": min(counts) if counts else None,
            "delivery_count_max": max(counts) if counts else None}


def measure(broker: Broker, queue_type: str, n: int, repeats: int,
            settings: Settings) -> list[dict[str, Any]]:
    queue = broker.new_queue(f"hb-{queue_type[0]}{n}", queue_type)
    methods = METHODS_BY_TYPE[queue_type]
    runs: list[dict[str, Any]] = []
    conn = connect()
    try:
        confirms = conn.channel()  # as the worker: opened with the connection, reused
        confirms.confirm_delivery()
        for repeat in range(repeats):
            shift = repeat % len(methods)
            for method in methods[shift:] + methods[:shift]:
                broker.fill(queue, n)
                channel, held = hold(conn, queue, n)
                seconds = give_back(method, channel, confirms, queue, n, held)
                if channel.is_open:
                    channel.close()  # what an ack that never arrived would return shows now
                runs.append({"method": method, "repeat": repeat, "ms": seconds * 1000,
                             **check(broker, queue, n)})
                settings.say(f"handback {queue_type} N={n} {method}: {seconds * 1000:.2f} ms, "
                             f"queue {runs[-1]['count']}, x-delivery-count "
                             f"{runs[-1]['delivery_count_max']}")
    finally:
        if conn.is_open:
            conn.close()
        broker.delete(queue)
        broker.queues.remove(queue)
    return runs


def _extreme(pick: Any, values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def summarize(queue_type: str, n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"queue_type": queue_type, "n": n, "methods": {}}
    for method in METHODS_BY_TYPE[queue_type]:
        ours = [r for r in runs if r["method"] == method]
        ms = median([r["ms"] for r in ours])
        row["methods"][method] = {
            "median_ms": ms, "all_ms": [round(r["ms"], 3) for r in ours],
            "us_per_msg": ms * 1000 / n if ms is not None else None,
            "counts": [r["count"] for r in ours],
            "lost": sum(r["lost"] for r in ours),
            "duplicated": sum(r["duplicated"] for r in ours),
            "delivery_count_min": _extreme(min, [r["delivery_count_min"] for r in ours]),
            "delivery_count_max": _extreme(max, [r["delivery_count_max"] for r in ours]),
        }
    found = row["methods"]
    if "copy" in found:
        copy, nack = found["copy"], found["nack"]
        row["ratio_copy_nack"] = ratio(copy["median_ms"], nack["median_ms"])
        row["ratio_copy_close"] = ratio(copy["median_ms"], found["close"]["median_ms"])
        row["extra_ms_copy"] = copy["median_ms"] - nack["median_ms"]
        row["copy_ok"] = (copy["lost"] == 0 and copy["duplicated"] == 0
                          and copy["delivery_count_max"] == 0
                          and all(c == n for c in copy["counts"]))
    return row


def run(settings: Settings, sizes: Sequence[int] | None = None,
        queue_types: Sequence[str] = ("quorum", "classic")) -> dict[str, Any]:
    if sizes is None:
        sizes = QUICK_SIZES if settings.quick else DEFAULT_SIZES
    broker = Broker()
    rows: list[dict[str, Any]] = []
    try:
        version = returns.broker_version(broker.conn)
        server = broker.server_version()
        for queue_type in queue_types:
            for n in sizes:
                runs = measure(broker, queue_type, n, settings.repeats, settings)
                rows.append(summarize(queue_type, n, runs))
                rows[-1]["runs"] = runs
    finally:
        broker.close()
    for row in rows:
        if "ratio_copy_nack" in row:
            settings.say(f"handback {row['queue_type']} N={row['n']}: copy/nack "
                         f"{row['ratio_copy_nack']:.1f}, +{row['extra_ms_copy']:.1f} ms per stop")
    return {"broker": server, "version": list(version) if version else None,
            "repeats": settings.repeats, "sizes": list(sizes),
            "worker_way": {qt: "nack" if returns.nack_is_free(qt, version) else "copy"
                           for qt in queue_types},
            "summary": rows}
