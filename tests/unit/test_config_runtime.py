"""The worker-runtime settings of issue #3: timeouts, retries, delays, dead-lettering."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from qsupervisor.config import (
    Backoff,
    DaemonConfig,
    DelayConfig,
    ProgramConfig,
    fields,
    load_config,
    schema,
)
from qsupervisor.config.model import DELAY_HORIZON

from .config_files import daemon_file, problems, program_file, write

DURATION_HINT = "expected a duration such as 30, '500ms', '30s', '5m', '1h' or '2d'"
TIMEOUT_ADVICE = (
    "RabbitMQ would close the channel before the job ends: lower timeout, or raise "
    "consumer_timeout on the broker and in qsupervisord.consumer_timeout"
)


def orders(tmp_path: Path, extra: str) -> ProgramConfig:
    return load_config(program_file(tmp_path, extra)).programs["orders"]


# -- defaults --------------------------------------------------------------------------


def test_runtime_defaults_of_the_model() -> None:
    program = ProgramConfig(name="orders", handler="a:b", queue="orders")
    assert (program.timeout, program.attempts, program.backoff) == (0.0, 5, Backoff())
    assert (program.queue_type, program.format) == ("quorum", "json")
    assert (program.max_memory, program.max_age) == (0, 0.0)
    assert Backoff() == Backoff(initial=1.0, factor=2.0, max=3600.0, jitter=0.2)
    daemon = DaemonConfig()
    assert (daemon.delay, daemon.consumer_timeout) == (DelayConfig(resolution=0.1), 1800.0)


def test_loaded_program_derives_delay_exchange_and_dead_letter_queue_from_its_queue(tmp_path: Path) -> None:
    program = orders(tmp_path, "queue: orders.v2")
    assert (program.delay_exchange, program.dead_letter_queue) == ("orders.v2.delay", "orders.v2.failed")
    assert orders(tmp_path, "workers: 1").dead_letter_queue == "orders.failed"


def test_schema_defaults_of_nested_sections_come_from_the_model() -> None:
    assert schema.BACKOFF.default("factor") == 2.0
    assert schema.DELAY.default("resolution") == 0.1
    assert schema.DAEMON.default("delay") == DelayConfig()
    assert schema.PROGRAM.default("backoff") == Backoff()


# -- valid values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, attribute, value",
    [
        ("timeout: 60s", "timeout", 60.0),
        ("timeout: 0", "timeout", 0.0),
        ("timeout: 29m59s", "timeout", 1799.0),
        ("attempts: 1", "attempts", 1),
        ("attempts: 100", "attempts", 100),
        ("backoff: {factor: 1.5}", "backoff", Backoff(factor=1.5)),
        ("backoff: {factor: 1}", "backoff", Backoff(factor=1.0)),
        ("backoff: {jitter: 0}", "backoff", Backoff(jitter=0.0)),
        ("backoff: {jitter: 1}", "backoff", Backoff(jitter=1.0)),
        ("backoff: {initial: 1h, max: 1h}", "backoff", Backoff(initial=3600.0)),
        ("backoff: {initial: 2h, max: 1d}", "backoff", Backoff(initial=7200.0, max=86400.0)),
        ("backoff: {initial: 250ms, factor: 3, max: 10m, jitter: 0.5}", "backoff",
         Backoff(initial=0.25, factor=3.0, max=600.0, jitter=0.5)),
        ("backoff:", "backoff", Backoff()),
        ("backoff: {}", "backoff", Backoff()),
        ("delay_exchange: later", "delay_exchange", "later"),
        ("delay_exchange: " + "x" * 200, "delay_exchange", "x" * 200),
        ("dead_letter_queue: orders.dead", "dead_letter_queue", "orders.dead"),
        ("queue_type: classic", "queue_type", "classic"),
        ("queue_type: quorum", "queue_type", "quorum"),
        ("format: raw", "format", "raw"),
        ("max_memory: 512MiB", "max_memory", 512 * 1024 * 1024),
        ("max_memory: 1GB", "max_memory", 10**9),
        ("max_memory: 0", "max_memory", 0),
        ("max_age: 6h", "max_age", 21600.0),
        ("max_age: 1d12h", "max_age", 129600.0),
        ("max_age: 0", "max_age", 0.0),
    ],
)
def test_valid_runtime_values_are_parsed(tmp_path: Path, extra: str, attribute: str, value: Any) -> None:
    assert getattr(orders(tmp_path, extra), attribute) == value


def test_backoff_as_a_block_mapping_with_merge_key(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            backoff: &slow
              initial: 10s
              max: 2h
          emails:
            handler: app.mail:send
            backoff:
              <<: *slow
              factor: 4
        """)
    programs = load_config(path).programs
    assert programs["orders"].backoff == Backoff(initial=10.0, max=7200.0)
    assert programs["emails"].backoff == Backoff(initial=10.0, factor=4.0, max=7200.0)


@pytest.mark.parametrize(
    "extra, delay",
    [
        ("delay: {resolution: 100ms}", DelayConfig(0.1)),
        ("delay: {resolution: 1}", DelayConfig(1.0)),
        ("delay: {resolution: 10ms}", DelayConfig(0.01)),
        ("delay: {resolution: 1m}", DelayConfig(60.0)),
        ("delay:", DelayConfig()),
        ("delay: {}", DelayConfig()),
    ],
)
def test_valid_delay_sections(tmp_path: Path, extra: str, delay: DelayConfig) -> None:
    assert load_config(daemon_file(tmp_path, extra)).daemon.delay == delay


@pytest.mark.parametrize("written, seconds", [("30m", 1800.0), ("0", 0.0), ("2h", 7200.0), ("45", 45.0)])
def test_valid_consumer_timeouts(tmp_path: Path, written: str, seconds: float) -> None:
    assert load_config(daemon_file(tmp_path, f"consumer_timeout: {written}")).daemon.consumer_timeout == seconds


# -- invalid values: one problem each, at the line and key -------------------------------


@pytest.mark.parametrize(
    "extra, key, message",
    [
        ("timeout: soon", "timeout", f"{DURATION_HINT}, got 'soon'"),
        ("timeout: -1s", "timeout", "a duration cannot be negative, got '-1s'"),
        ("timeout: true", "timeout", f"{DURATION_HINT}, got True"),
        ("attempts: 0", "attempts", "expected an integer >= 1, got 0"),
        ("attempts: five", "attempts", "expected an integer >= 1, got 'five'"),
        ("attempts: 1.5", "attempts", "expected an integer >= 1, got 1.5"),
        ("attempts: true", "attempts", "expected an integer >= 1, got true"),
        ("backoff: 5", "backoff", "expected a mapping with the keys initial, factor, max, jitter, got 5"),
        ("backoff: [1s]", "backoff", "expected a mapping with the keys initial, factor, max, jitter, got a list"),
        ("backoff: {factr: 3}", "backoff.factr", "unknown key; did you mean 'factor'?"),
        ("backoff: {colour: 3}", "backoff.colour", "unknown key"),
        ("backoff: {initial: 0}", "backoff.initial", "expected a duration > 0, got 0"),
        ("backoff: {initial: soon}", "backoff.initial", f"{DURATION_HINT}, got 'soon'"),
        ("backoff: {max: 0s}", "backoff.max", "expected a duration > 0, got '0s'"),
        ("backoff: {factor: 0.5}", "backoff.factor", "expected a number >= 1, got 0.5"),
        ("backoff: {factor: two}", "backoff.factor", "expected a number >= 1, got 'two'"),
        ("backoff: {factor: true}", "backoff.factor", "expected a number >= 1, got true"),
        ("backoff: {factor: .inf}", "backoff.factor", "expected a number >= 1, got inf"),
        ("backoff: {jitter: 1.5}", "backoff.jitter", "expected a number between 0 and 1, got 1.5"),
        ("backoff: {jitter: -0.1}", "backoff.jitter", "expected a number between 0 and 1, got -0.1"),
        ("backoff: {jitter: .nan}", "backoff.jitter", "expected a number between 0 and 1, got nan"),
        ("backoff: {jitter: 20%}", "backoff.jitter", "expected a number between 0 and 1, got '20%'"),
        ("backoff: {initial: 2s, max: 500ms}", "backoff.max",
         "500ms is below backoff.initial (2s); max caps every delay, so it must be at least initial"),
        ("backoff: {initial: 2h}", "backoff.initial",
         "2h is above backoff.max (1h, the default); lower initial or set max"),
        ("delay_exchange: ''", "delay_exchange", "expected an exchange name, got ''"),
        ("delay_exchange: 5", "delay_exchange", "expected an exchange name, got 5"),
        ("delay_exchange: amq.delay", "delay_exchange",
         "exchange names starting with 'amq.' are reserved by RabbitMQ, got 'amq.delay'"),
        ("delay_exchange: " + "x" * 201, "delay_exchange",
         "a delay exchange name is at most 200 bytes (its delay levels are named after it), got 201"),
        ("delay_exchange: " + "é" * 101, "delay_exchange",
         "a delay exchange name is at most 200 bytes (its delay levels are named after it), got 202"),
        ("dead_letter_queue: ''", "dead_letter_queue", "expected a queue name, got ''"),
        ("dead_letter_queue: [a]", "dead_letter_queue", "expected a queue name, got a list"),
        ("dead_letter_queue: amq.failed", "dead_letter_queue",
         "queue names starting with 'amq.' are reserved by RabbitMQ, got 'amq.failed'"),
        ("dead_letter_queue: " + "q" * 256, "dead_letter_queue", "queue names are at most 255 bytes, got 256"),
        ("queue_type: lazy", "queue_type", "expected one of quorum, classic, got 'lazy'"),
        ("queue_type: Quorum", "queue_type", "expected one of quorum, classic, got 'Quorum'; did you mean 'quorum'?"),
        ("queue_type: 1", "queue_type", "expected one of quorum, classic, got 1"),
        ("format: xml", "format", "expected one of json, raw, got 'xml'"),
        ("format: JSON", "format", "expected one of json, raw, got 'JSON'"),
        ("max_memory: 512M", "max_memory",
         "unknown size unit 'M' in '512M'; use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB "
         "(powers of 1024)"),
        ("max_memory: -1", "max_memory", "a size cannot be negative, got -1"),
        ("max_memory: lots", "max_memory", "expected a size such as 1048576, '100KB', '512MiB' or '1GB', got 'lots'"),
        ("max_age: forever", "max_age", f"{DURATION_HINT}, got 'forever'"),
        ("max_age: -6h", "max_age", "a duration cannot be negative, got '-6h'"),
    ],
)
def test_bad_runtime_values_are_reported_with_line_and_key(
    tmp_path: Path, extra: str, key: str, message: str
) -> None:
    path = program_file(tmp_path, extra)
    assert problems(path) == [f"{path}:4: programs.orders.{key}: {message}"]


@pytest.mark.parametrize(
    "extra, key, message",
    [
        ("delay: 100ms", "delay", "expected a mapping with the keys resolution, got '100ms'"),
        ("delay: {resolutoin: 1s}", "delay.resolutoin", "unknown key; did you mean 'resolution'?"),
        ("delay: {resolution: 5ms}", "delay.resolution", "expected a duration between 10ms and 1m, got '5ms'"),
        ("delay: {resolution: 61s}", "delay.resolution", "expected a duration between 10ms and 1m, got '61s'"),
        ("delay: {resolution: 0}", "delay.resolution", "expected a duration between 10ms and 1m, got 0"),
        ("delay: {resolution: fine}", "delay.resolution", f"{DURATION_HINT}, got 'fine'"),
        ("consumer_timeout: -1", "consumer_timeout", "a duration cannot be negative, got -1"),
        ("consumer_timeout: later", "consumer_timeout", f"{DURATION_HINT}, got 'later'"),
    ],
)
def test_bad_daemon_runtime_values_are_reported_with_line_and_key(
    tmp_path: Path, extra: str, key: str, message: str
) -> None:
    path = daemon_file(tmp_path, extra)
    assert problems(path) == [f"{path}:2: qsupervisord.{key}: {message}"]


def test_each_bad_sub_key_is_reported_at_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          delay:
            resolution: 1us
        programs:
          orders:
            handler: app.jobs:handle
            backoff:
              initial: 0
              factr: 3
              max: soon
              jitter: 1.5
        """)
    assert problems(path) == [
        f"{path}:3: qsupervisord.delay.resolution: {DURATION_HINT}, got '1us'",
        f"{path}:8: programs.orders.backoff.initial: expected a duration > 0, got 0",
        f"{path}:9: programs.orders.backoff.factr: unknown key; did you mean 'factor'?",
        f"{path}:10: programs.orders.backoff.max: {DURATION_HINT}, got 'soon'",
        f"{path}:11: programs.orders.backoff.jitter: expected a number between 0 and 1, got 1.5",
    ]


def test_backoff_max_below_initial_points_at_the_max_line(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            backoff:
              initial: 1m
              max: 30s
        """)
    assert problems(path) == [
        f"{path}:6: programs.orders.backoff.max: 30s is below backoff.initial (1m); "
        "max caps every delay, so it must be at least initial"
    ]


def test_an_unconvertible_sub_value_does_not_hide_its_neighbours(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            backoff:
              initial: !!int abc
              factr: 2
        """)
    assert problems(path) == [
        f"{path}:5: programs.orders.backoff.initial: cannot read 'abc' as !!int",
        f"{path}:6: programs.orders.backoff.factr: unknown key; did you mean 'factor'?",
    ]


def test_an_unconvertible_nested_section_is_reported_once(tmp_path: Path) -> None:
    path = program_file(tmp_path, "backoff: !!set {a}")
    assert problems(path) == [f"{path}:4: programs.orders.backoff: unsupported YAML tag !!set"]


# -- timeout against the broker's consumer_timeout ----------------------------------------


def timeout_file(tmp_path: Path, consumer_timeout: str, timeout: str) -> str:
    """consumer_timeout on line 2, the program's timeout on line 6."""
    return write(tmp_path / "queues.yaml", f"""
        qsupervisord:
          consumer_timeout: {consumer_timeout}
        programs:
          orders:
            handler: app.jobs:handle
            timeout: {timeout}
        """)


def test_timeout_above_consumer_timeout_is_an_error_at_the_timeout_line(tmp_path: Path) -> None:
    path = timeout_file(tmp_path, "30m", "45m")
    assert problems(path) == [
        f"{path}:6: programs.orders.timeout: 45m is at or above the broker's consumer_timeout (30m); "
        + TIMEOUT_ADVICE
    ]


def test_timeout_equal_to_consumer_timeout_is_an_error(tmp_path: Path) -> None:
    path = timeout_file(tmp_path, "1800", "30m")
    assert problems(path) == [
        f"{path}:6: programs.orders.timeout: 30m is at or above the broker's consumer_timeout (30m); "
        + TIMEOUT_ADVICE
    ]


def test_timeout_is_checked_against_the_default_consumer_timeout(tmp_path: Path) -> None:
    path = program_file(tmp_path, "timeout: 1h30m")
    assert problems(path) == [
        f"{path}:4: programs.orders.timeout: 1h30m is at or above the broker's consumer_timeout (30m); "
        + TIMEOUT_ADVICE
    ]


@pytest.mark.parametrize(
    "consumer_timeout, timeout",
    [("30m", "29m59s"), ("0", "5h"), ("1s", "0"), ("2h", "1h"), ("7d", "3d")],
)
def test_timeouts_the_broker_allows_are_accepted(tmp_path: Path, consumer_timeout: str, timeout: str) -> None:
    load_config(timeout_file(tmp_path, consumer_timeout, timeout))


def test_programs_in_includes_are_checked_against_the_main_files_consumer_timeout(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        qsupervisord:
          consumer_timeout: 10m
          include: [conf.d/*.yaml]
        """)
    included = write(tmp_path / "conf.d" / "orders.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            timeout: 15m
        """)
    assert problems(path) == [
        f"{included}:4: programs.orders.timeout: 15m is at or above the broker's consumer_timeout (10m); "
        + TIMEOUT_ADVICE
    ]


def test_a_bad_consumer_timeout_is_reported_once_and_not_held_against_timeouts(tmp_path: Path) -> None:
    path = timeout_file(tmp_path, "later", "1h")
    assert problems(path) == [f"{path}:2: qsupervisord.consumer_timeout: {DURATION_HINT}, got 'later'"]
    path = timeout_file(tmp_path, "!!int abc", "1h")
    assert problems(path) == [f"{path}:2: qsupervisord.consumer_timeout: cannot read 'abc' as !!int"]


@pytest.mark.parametrize("section, message", [
    ("qsupervisord: !!set {a}", "qsupervisord: unsupported YAML tag !!set"),
    ("qsupervisord: [a]", "qsupervisord: expected a mapping of settings, got a list"),
])
def test_a_broken_daemon_section_is_not_held_against_timeouts(tmp_path: Path, section: str, message: str) -> None:
    path = write(tmp_path / "queues.yaml", f"""
        {section}
        programs:
          orders:
            handler: app.jobs:handle
            timeout: 1h
        """)
    assert problems(path) == [f"{path}:1: {message}"]


def test_a_bad_timeout_is_reported_once(tmp_path: Path) -> None:
    path = timeout_file(tmp_path, "30m", "-45m")
    assert problems(path) == [f"{path}:6: programs.orders.timeout: a duration cannot be negative, got '-45m'"]


# -- names derived from the queue ------------------------------------------------------


def test_dead_letter_queue_must_differ_from_the_queue(tmp_path: Path) -> None:
    path = program_file(tmp_path, "dead_letter_queue: orders")
    assert problems(path) == [
        f"{path}:4: programs.orders.dead_letter_queue: must differ from the program's queue 'orders': "
        "failed messages would be consumed again as new ones"
    ]


def test_delay_exchange_must_differ_from_the_queue(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            queue: jobs
            delay_exchange: jobs
        """)
    assert problems(path) == [
        f"{path}:5: programs.orders.delay_exchange: must differ from the program's queue 'jobs': "
        "the delay levels are named after it and must not be mistaken for it"
    ]


def test_names_are_not_compared_with_a_queue_that_failed(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            queue: amq.orders
            dead_letter_queue: orders
        """)
    assert problems(path) == [
        f"{path}:4: programs.orders.queue: queue names starting with 'amq.' are reserved by RabbitMQ, "
        "got 'amq.orders'"
    ]


def test_a_long_queue_makes_unusable_default_names_reported_at_the_queue_line(tmp_path: Path) -> None:
    path = program_file(tmp_path, "queue: " + "q" * 250)
    assert problems(path) == [
        f"{path}:4: programs.orders.queue: the default delay_exchange '<queue>.delay' is unusable: "
        "a delay exchange name is at most 200 bytes (its delay levels are named after it), got 256; "
        "set delay_exchange explicitly",
        f"{path}:4: programs.orders.queue: the default dead_letter_queue '<queue>.failed' is unusable: "
        "queue names are at most 255 bytes, got 257; set dead_letter_queue explicitly",
    ]


def test_explicit_names_make_a_long_queue_usable(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", f"""
        programs:
          orders:
            handler: app.jobs:handle
            queue: {"q" * 250}
            delay_exchange: orders.delay
            dead_letter_queue: orders.failed
        """)
    assert load_config(path).programs["orders"].queue == "q" * 250


def test_a_program_name_unusable_as_a_queue_needs_an_explicit_queue(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          amq.orders:
            handler: app.jobs:handle
          ok:
            handler: app.jobs:handle
            queue: amq.fine.not
        """)
    assert problems(path)[0] == (
        f"{path}:2: programs.amq.orders: the default queue (the program name) is unusable: "
        "queue names starting with 'amq.' are reserved by RabbitMQ, got 'amq.orders'; set queue"
    )
    path = write(tmp_path / "queues.yaml", "programs:\n  amq.orders: {handler: 'a:b', queue: orders}\n")
    assert load_config(path).programs["amq.orders"].dead_letter_queue == "orders.failed"


# -- Backoff.delay -----------------------------------------------------------------------

MIDDLE = 0.5  # a rand() of 0.5 means no jitter either way


def test_backoff_grows_by_factor_from_initial() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, max=3600.0, jitter=0.2)
    delays = [backoff.delay(attempt, lambda: MIDDLE) for attempt in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_is_capped_at_max() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, max=3600.0, jitter=0.0)
    assert backoff.delay(12, random.random) == 2048.0
    assert backoff.delay(13, random.random) == 3600.0
    assert backoff.delay(100, random.random) == 3600.0


def test_backoff_survives_attempt_counts_beyond_float_range() -> None:
    assert Backoff(jitter=0.0).delay(100_000) == 3600.0


def test_backoff_jitter_bounds_follow_rand() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, max=3600.0, jitter=0.2)
    assert backoff.delay(3, lambda: 0.0) == pytest.approx(3.2)
    assert backoff.delay(3, lambda: 0.25) == pytest.approx(3.6)
    assert backoff.delay(3, lambda: 0.75) == pytest.approx(4.4)
    assert backoff.delay(3, lambda: 1.0) == pytest.approx(4.8)


def test_jitter_never_takes_a_delay_above_max() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, max=3600.0, jitter=0.2)
    assert backoff.delay(20, lambda: 1.0) == 3600.0
    assert backoff.delay(20, lambda: 0.0) == pytest.approx(2880.0)


def test_full_jitter_can_reach_zero_but_not_below() -> None:
    assert Backoff(initial=10.0, jitter=1.0).delay(1, lambda: 0.0) == 0.0


def test_without_jitter_the_delay_ignores_rand() -> None:
    backoff = Backoff(initial=0.5, factor=3.0, max=60.0, jitter=0.0)
    assert {backoff.delay(2, lambda r=r: r) for r in (0.0, 0.3, 0.99)} == {1.5}


def test_factor_one_retries_at_a_constant_delay() -> None:
    backoff = Backoff(initial=5.0, factor=1.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 10, 1000)] == [5.0, 5.0, 5.0]


def test_random_delays_stay_within_the_jitter_band() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, max=100.0, jitter=0.2)
    rand = random.Random(3).random
    for attempt in range(1, 12):
        base = min(2.0 ** (attempt - 1), 100.0)
        for _ in range(50):
            delay = backoff.delay(attempt, rand)
            assert base * 0.8 <= delay <= min(base * 1.2, 100.0)


def test_default_rand_is_used_when_none_is_given() -> None:
    delays = {Backoff(initial=10.0).delay(1) for _ in range(20)}
    assert all(8.0 <= delay <= 12.0 for delay in delays)
    assert len(delays) > 1


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_numbers_start_at_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt numbers start at 1"):
        Backoff().delay(attempt)


@pytest.mark.parametrize(
    "seconds, text",
    [(2700.0, "45m"), (1800.0, "30m"), (5400.0, "1h30m"), (0.1, "100ms"), (1.5, "1s500ms"),
     (90061.0, "1d1h1m1s"), (0.0, "0s"), (0.0001, "0.0001s")],
)
def test_durations_in_messages_read_as_written(seconds: float, text: str) -> None:
    assert fields.show_duration(seconds) == text


# -- DelayConfig -------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, levels", [(0.1, 29), (1.0, 25), (0.01, 32), (60.0, 20)])
def test_delay_levels_reach_a_year(resolution: float, levels: int) -> None:
    delay = DelayConfig(resolution=resolution)
    assert delay.levels == levels
    assert delay.max_delay == (2**levels - 1) * resolution


@pytest.mark.parametrize("resolution", [0.01, 0.1, 0.3, 0.5, 1.0, 7.0, 60.0])
def test_delay_levels_are_the_fewest_that_hold_366_days(resolution: float) -> None:
    levels = DelayConfig(resolution=resolution).levels
    assert (2**levels - 1) * resolution >= DELAY_HORIZON
    assert (2 ** (levels - 1) - 1) * resolution < DELAY_HORIZON


def test_default_delay_chain_holds_a_year_in_tenths_of_a_second() -> None:
    assert DelayConfig().levels == 29
    assert DelayConfig().max_delay > 366 * 86400


def test_backoff_and_delay_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Backoff().factor = 3.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DelayConfig().resolution = 1.0  # type: ignore[misc]


def test_the_example_configuration_sets_every_runtime_key() -> None:
    example = Path(__file__).resolve().parents[2] / "conf" / "queues.yaml"
    config = load_config(str(example))
    assert (config.daemon.delay, config.daemon.consumer_timeout) == (DelayConfig(0.1), 1800.0)
    program = config.programs["orders"]
    assert (program.timeout, program.attempts, program.backoff) == (60.0, 5, Backoff())
    assert (program.delay_exchange, program.dead_letter_queue) == ("orders.delay", "orders.failed")
    assert (program.queue_type, program.format) == ("quorum", "json")
    assert (program.max_memory, program.max_age) == (512 * 1024 * 1024, 6 * 3600.0)
