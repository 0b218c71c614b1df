"""What the numbers were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Any

import pika

import qsupervisor

from .common import REPO_DIR, Broker


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def git() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain",
                                "--untracked-files=no", "qsupervisor"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' + uncommitted changes in qsupervisor/' if dirty else ''}" or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def describe() -> dict[str, Any]:
    broker = Broker()
    try:
        rabbit = broker.server_version()
    finally:
        broker.close()
    hypervisor = ""
    try:
        with open("/proc/cpuinfo") as f:
            hypervisor = " (virtual machine)" if " hypervisor" in f.read() else ""
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _cpu_model() + hypervisor,
        "cores": os.cpu_count(),
        "ram_gib": round(_mem_total_gib(), 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _os_release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pika": pika.__version__,
        "rabbitmq": rabbit,
        "qsupervisor": f"{qsupervisor.__version__} (git {git()})",
        "executable": sys.executable,
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}
