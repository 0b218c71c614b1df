"""What every benchmark part needs: settings, statistics, /proc readings, the broker."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pika
import pika.exceptions

from qsupervisor.broker.delays import DelayChain

BENCH_DIR = Path(__file__).resolve().parents[1]
APPS_DIR = BENCH_DIR / "apps"
REPO_DIR = BENCH_DIR.parent
BIN_DIR = Path(sys.executable).parent
QSUPERVISORD = str(BIN_DIR / "qsupervisord")
QSUPERVISORCTL = str(BIN_DIR / "qsupervisorctl")
BROKER_URL = os.environ.get("QSUPERVISOR_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")
RUN_ID = uuid.uuid4().hex[:8]  # in every queue name: runs never see each other's queues
DECLARED: list[str] = []  # every queue name this process used, for the smoke test's check


@dataclass
class Settings:
    quick: bool = False
    repeats: int = 3
    log: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr,
                                                                   flush=True))

    def say(self, text: str) -> None:
        self.log(f"[{time.strftime('%H:%M:%S')}] {text}")


# -- statistics ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100): a value that was actually observed."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def pair_ratios(runs: Iterable[dict[str, Any]], side: Callable[[dict[str, Any]], Any],
                ours: Any, theirs: Any) -> list[float]:
    """Each repeat's rate on `ours` side ÷ on `theirs` (the two ran back to back), for the
    repeats that have both: how much noise there is around the ratio of medians."""
    rates: dict[tuple[int, Any], float] = {}
    for run in runs:
        rates.setdefault((run["repeat"], side(run)), run["rate"])
    repeats = sorted({repeat for repeat, _ in rates})
    return [round(rates[r, ours] / rates[r, theirs], 3) for r in repeats
            if (r, ours) in rates and (r, theirs) in rates]


# -- /proc --------------------------------------------------------------------------------


def pss_kib(pid: int) -> int | None:
    """Proportional set size: private pages plus each shared page divided by its sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def cpu_seconds_precise(pid: int) -> float | None:
    """CPU time of every thread of the process, in ns resolution (/proc/PID/task/*/schedstat,
    first field): utime+stime counts 10 ms clock ticks, too coarse for an idle process."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total / 1e9


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if int(raw[raw.rindex(b")") + 2:].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return False
    return raw[raw.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- the broker -----------------------------------------------------------------------------


def connect(wait: float = 90.0) -> pika.BlockingConnection:
    """A connection for the runner; waits up to `wait` seconds for a broker that is
    restarting (other test suites on the same machine may restart it)."""
    params = pika.URLParameters(BROKER_URL)
    params.heartbeat = 0  # the runner's connections idle while it waits
    deadline = time.monotonic() + wait
    while True:
        try:
            return pika.BlockingConnection(params)
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


class Broker:
    """The runner's connection: declares, fills, counts, and deletes what it declared
    (with the dead-letter queue and delay chain the daemon declares for a queue)."""

    def __init__(self) -> None:
        self.conn = connect()
        self._channel = self.conn.channel()
        self.queues: list[str] = []

    @property
    def channel(self) -> Any:
        if not self.conn.is_open:  # the broker restarted: we still have queues to delete
            self.conn = connect()
            self._channel = self.conn.channel()
        if not self._channel.is_open:  # a failed passive declare closes it
            self._channel = self.conn.channel()
        return self._channel

    def server_version(self) -> str:
        props = self.conn._impl.server_properties  # pika keeps the broker's start frame here
        return f"{props.get('product', 'RabbitMQ')} {props.get('version', '?')} " \
               f"({props.get('platform', '?')})"

    def new_queue(self, label: str, queue_type: str = "quorum", declare: bool = True) -> str:
        name = f"bench-{label}-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        self.queues.append(name)
        DECLARED.append(name)
        if declare:
            # Exactly what the daemon declares (only x-queue-type), so it finds no conflict.
            self.channel.queue_declare(name, durable=True,
                                       arguments={"x-queue-type": queue_type})
        return name

    def fill(self, queue: str, count: int) -> float:
        """Publish `count` small persistent JSON messages; return once the queue holds them
        all. Returns the seconds it took."""
        started = time.monotonic()
        channel = self.channel
        for i in range(count):
            body = json.dumps({"n": i, "kind": "bench", "ok": True}).encode()
            channel.basic_publish("", queue, body, pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=f"m{i}"))
        wait_until(lambda: self.depth(queue)[0] >= count, 120, f"{count} messages in {queue}",
                   interval=0.05)
        return time.monotonic() - started

    def exists(self, queue: str) -> bool:
        try:
            self.channel.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise

    def depth(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) by a passive declare."""
        ok = self.channel.queue_declare(queue, passive=True).method
        return int(ok.message_count), int(ok.consumer_count)

    def purge(self, queue: str) -> None:
        self.channel.queue_purge(queue)

    def delete(self, queue: str) -> None:
        try:
            self._delete(queue)
        except (pika.exceptions.AMQPError, OSError):
            self.conn = connect()  # the broker restarted under us: once more, reconnected
            self._channel = self.conn.channel()
            self._delete(queue)

    def _delete(self, queue: str) -> None:
        channel = self.channel
        for name in (queue, f"{queue}.failed"):
            channel.queue_delete(name)
        chain = DelayChain(f"{queue}.delay", queue)
        for k in range(chain.levels):
            channel.queue_delete(chain.level_queue(k))
            channel.exchange_delete(chain.level_exchange(k))

    def close(self) -> None:
        try:
            for queue in self.queues:
                try:
                    self.delete(queue)
                except (pika.exceptions.AMQPError, OSError) as exc:
                    print(f"bench: could not delete {queue}: {exc!r}", file=sys.stderr)
            self.queues.clear()
        finally:
            if self.conn.is_open:
                self.conn.close()


class BrokerWatch:
    """Notices a broker restart (other suites on this machine run `rabbitmqctl stop_app`):
    RabbitMQ closes every connection when it stops, this idle one included."""

    def __init__(self) -> None:
        self.conn = connect()

    def intact(self) -> bool:
        try:
            self.conn.process_data_events(time_limit=0)
        except (pika.exceptions.AMQPError, OSError):
            return False
        return self.conn.is_open

    def close(self) -> None:
        try:
            if self.conn.is_open:
                self.conn.close()
        except (pika.exceptions.AMQPError, OSError):
            pass


class BrokerRestarted(Exception):
    """The broker went away during a measurement: it does not count, it is run again."""


BROKER_ERRORS = (pika.exceptions.AMQPError, OSError, BrokerRestarted)


def retrying(what: str, measure: Callable[[], Any], settings: Settings,
             attempts: int = 5) -> Any:
    """`measure()`, run again (after the broker is back) if the broker restarted meanwhile
    or a broker error interrupted it."""
    for attempt in range(1, attempts + 1):
        watch = BrokerWatch()
        try:
            result = measure()
            if not watch.intact():
                raise BrokerRestarted(f"the broker restarted during {what}")
            return result
        except Exception as exc:
            if attempt == attempts or not (isinstance(exc, BROKER_ERRORS) or not watch.intact()):
                raise
            settings.say(f"{what}: {exc!r}; measuring again")
            time.sleep(2.0)
            connect().close()  # waits for the broker to be back
        finally:
            watch.close()


class DepthSampler:
    """Samples a queue's (time, ready, consumers) on its own connection, in a thread."""

    def __init__(self, queue: str, interval: float = 0.01) -> None:
        self.queue = queue
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="depth-sampler", daemon=True)

    def _run(self) -> None:
        try:
            conn = connect()
            try:
                channel = conn.channel()
                while not self._stop.is_set():
                    ok = channel.queue_declare(self.queue, passive=True).method
                    self.samples.append((time.monotonic(), int(ok.message_count),
                                         int(ok.consumer_count)))
                    self._stop.wait(self.interval)
            finally:
                if conn.is_open:
                    conn.close()
        except BaseException as exc:
            self._error = exc

    def start(self) -> DepthSampler:
        self._thread.start()
        wait_until(lambda: self.samples or self._error, 30, "the first queue sample")
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> DepthSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def latest(self) -> tuple[float, int, int]:
        if self._error is not None:
            raise self._error
        return self.samples[-1]

    def min_consumers_since(self, since: float) -> int | None:
        seen = [c for t, _, c in self.samples if t >= since]
        return min(seen) if seen else None


def crossing(samples: Iterable[tuple[float, int, int]], level: float) -> float | None:
    """When the queue depth first fell to `level` or below, interpolated between the two
    samples around it."""
    previous = None
    for t, depth, _ in samples:
        if depth <= level:
            if previous is None or previous[1] == depth:
                return t
            t0, d0 = previous
            return t0 + (t - t0) * (d0 - level) / (d0 - depth)
        previous = (t, depth)
    return None
