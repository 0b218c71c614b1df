"""qsupervisord.metrics: the Prometheus endpoint's address, checked when the file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from qsupervisor.config import DaemonConfig, MetricsConfig, load_config
from qsupervisor.master.reconfigure import daemon_setting_warnings

from .config_files import daemon_file, problems


def listen(tmp_path: Path, value: str) -> MetricsConfig:
    return load_config(daemon_file(tmp_path, f"metrics: {{listen: {value}}}")).daemon.metrics


def test_off_by_default(tmp_path: Path) -> None:
    assert DaemonConfig().metrics == MetricsConfig()
    assert not DaemonConfig().metrics.enabled
    assert not load_config(daemon_file(tmp_path, "metrics:")).daemon.metrics.enabled


@pytest.mark.parametrize(("written", "normalised", "host", "port"), [
    ("'127.0.0.1:9808'", "127.0.0.1:9808", "127.0.0.1", 9808),
    ("'[::1]:9808'", "[::1]:9808", "::1", 9808),
    ("'[0:0::1]:80'", "[::1]:80", "::1", 80),
    ("9808", "127.0.0.1:9808", "127.0.0.1", 9808),  # a bare port: loopback
    ("':9808'", "127.0.0.1:9808", "127.0.0.1", 9808),
    ("'localhost:9808'", "127.0.0.1:9808", "127.0.0.1", 9808),
    ("'0.0.0.0:9808'", "0.0.0.0:9808", "0.0.0.0", 9808),  # wider: only when written
    ("'[::]:9808'", "[::]:9808", "::", 9808),
])
def test_addresses(tmp_path: Path, written: str, normalised: str, host: str, port: int) -> None:
    metrics = listen(tmp_path, written)
    assert (metrics.listen, metrics.host, metrics.port, metrics.enabled) == (
        normalised, host, port, True)


@pytest.mark.parametrize(("written", "why"), [
    ("'127.0.0.1:0'", "the port must be 1..65535"),
    ("'127.0.0.1:65536'", "the port must be 1..65535"),
    ("'127.0.0.1:http'", "the port must be 1..65535"),
    ("'metrics.example.com:9808'", "is not an IP address (names are not resolved"),
    ("'::1:9808'", "write an IPv6 address in brackets: '[::1]:9808'"),
    ("'[127.0.0.1:9808'", "is not an IP address"),
    ("[9808]", "expected host:port"),
    ("''", "expected host:port"),
])
def test_bad_addresses(tmp_path: Path, written: str, why: str) -> None:
    found = problems(daemon_file(tmp_path, f"metrics: {{listen: {written}}}"))
    assert len(found) == 1 and "qsupervisord.metrics.listen" in found[0], found
    assert why in found[0]


def test_unknown_sub_key(tmp_path: Path) -> None:
    found = problems(daemon_file(tmp_path, "metrics: {lisen: '127.0.0.1:9808'}"))
    assert "unknown key" in found[0] and "listen" in found[0]


def test_a_changed_endpoint_waits_for_a_restart() -> None:
    new = DaemonConfig(metrics=MetricsConfig("127.0.0.1:9808"))
    assert daemon_setting_warnings(DaemonConfig(), new) == [
        "metrics: takes effect when qsupervisord restarts"]
