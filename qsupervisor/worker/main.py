"""Entry point of a worker process, called in the child right after its leader forks.

Threads: the main thread owns signals and the channel to the master, the I/O thread owns
the broker connection, the job thread runs the handler. The main thread never touches pika
except through `Consumer.request_stop`, which is thread-safe, so a signal can never land
inside pika's own locks.
"""

from __future__ import annotations

import importlib
import os
import selectors
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional

from setproctitle import setproctitle

from qsupervisor import ipc, logs, procutil
from qsupervisor.config import ProgramConfig
from qsupervisor.worker.consumer import Consumer, WorkerEvents
from qsupervisor.worker.jobs import JobRunner
from qsupervisor.worker.stats import Stats

log = logs.get("qsupervisor.worker")

EXIT_HANDLER_IMPORT = 3  # the handler could not be imported: a start failure
EXIT_STOP_TIMEOUT = 4  # had to leave with a job still running


@dataclass(frozen=True)
class WorkerSpec:
    program: ProgramConfig
    broker: str
    slot: int
    max_jobs: int  # this worker's own limit, jitter already drawn; 0 = never
    log_format: str
    log_level: str


def load_handler(spec: str) -> Callable[[Any], Any]:
    module_name, _, attr_path = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


class _ChannelEvents(WorkerEvents):
    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def send(self, msg: ipc.Message) -> None:
        with self._lock:
            try:
                ipc.send(self._channel, msg)
            except OSError:
                pass  # the master is gone; the main thread notices the EOF

    def ready(self) -> None:
        self.send({"ev": "ready"})

    def broker_lost(self, error: str) -> None:
        self.send({"ev": "broker_lost", "error": error})


def run(spec: WorkerSpec, channel: socket.socket, stats_fd: int) -> NoReturn:
    code = 70
    try:
        code = _run(spec, channel, stats_fd)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _run(spec: WorkerSpec, channel: socket.socket, stats_fd: int) -> int:
    name = spec.program.name
    setproctitle(f"qsupervisord: {name} worker {spec.slot}")
    procutil.reset_signals()
    procutil.die_with_parent(signal.SIGTERM)
    logs.configure(spec.log_format, spec.log_level)
    logs.bind(program=name, slot=spec.slot)
    events = _ChannelEvents(channel)
    try:
        handler = load_handler(spec.program.handler)
    except Exception as exc:
        log.error("cannot import the handler", handler=spec.program.handler,
                  error=traceback.format_exc())
        events.send({"ev": "exiting", "reason": "handler import failed",
                     "error": f"{spec.program.handler}: {type(exc).__name__}: {exc}"})
        return EXIT_HANDLER_IMPORT
    stats = Stats(stats_fd)
    runner = JobRunner(handler, spec.program.queue, stats)
    consumer = Consumer(spec.broker, spec.program.queue, spec.program.prefetch,
                        spec.max_jobs, runner, events)
    reason = _supervise(consumer, channel, spec.program.stop_timeout)
    if reason is None:
        log.error("stop_timeout passed with a job still running; leaving it to the broker")
        return EXIT_STOP_TIMEOUT
    events.send({"ev": "exiting", "reason": reason})
    return 0


def _supervise(consumer: Consumer, channel: socket.socket, stop_timeout: float) -> Optional[str]:
    """Run the consumer and wait for a reason to stop; None if it did not stop in time."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda *_: None)  # the wake-up fd carries the signal number
    done = threading.Event()
    result: list = []

    def consume() -> None:
        try:
            result.append(consumer.run())
        except BaseException:
            log.error("the consumer failed", error=traceback.format_exc())
        finally:
            done.set()
            os.write(wake_w, b"\0")

    threading.Thread(target=consume, name="io", daemon=True).start()
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ)
    selector.register(channel, selectors.EVENT_READ)
    deadline: Optional[float] = None
    while not done.is_set():
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if deadline is not None and timeout == 0.0:
            return None
        for key, _ in selector.select(timeout):
            reason = _read_stop_request(key.fileobj, wake_r, channel, selector)
            if reason is not None and deadline is None:
                consumer.request_stop(reason)
                deadline = time.monotonic() + stop_timeout
    if not result:
        raise RuntimeError("the consumer thread failed")
    return result[0]


def _read_stop_request(source: Any, wake_r: int, channel: socket.socket,
                       selector: selectors.BaseSelector) -> Optional[str]:
    if source == wake_r:
        data = os.read(wake_r, 512)
        signals = [b for b in data if b in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)]
        return "stop" if signals else None
    msg, _fds = ipc.recv(channel)
    if msg is None:
        # The master is gone: nobody reads our output any more, so do not block on it.
        selector.unregister(channel)
        _silence_output()
        return "master gone"
    if msg.get("op") == "stop":
        return str(msg.get("reason") or "stop")
    return None


def _silence_output() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
