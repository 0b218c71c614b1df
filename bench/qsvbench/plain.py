"""The baseline side: N separate plain pika consumer processes (bench/apps/plain_consumer.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .common import APPS_DIR, BROKER_URL

SCRIPT = str(APPS_DIR / "plain_consumer.py")


class PlainConsumers:
    def __init__(self, queue: str, count: int, prefetch: int = 10, job: str = "noop",
                 preload: Sequence[str] = ()) -> None:
        self.argv = [sys.executable, SCRIPT, queue, "--prefetch", str(prefetch), "--job", job,
                     "--broker", BROKER_URL, "--preload", ",".join(preload)]
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def start(self) -> PlainConsumers:
        for _ in range(self.count):
            self.procs.append(subprocess.Popen(self.argv, stdin=subprocess.DEVNULL))
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a plain consumer exited with {proc.returncode}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()

    def __enter__(self) -> PlainConsumers:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
