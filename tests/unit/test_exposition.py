"""The exposition writer, read back with prometheus_client's parser (Prometheus's own Python
text parser): what the endpoint writes must parse as what was meant."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from qsupervisor.master import exposition
from qsupervisor.master.exposition import Family


def parse(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_escaping_round_trips() -> None:
    nasty = 'a "quoted" back\\slash and a\nnewline, {braces}=, and ünïcode'
    family = Family("qsupervisor_test", "gauge", "help with \\ and\nnewline")
    family.add((("program", nasty), ("state", "x")), 3)
    text = exposition.render([family])
    assert '\\"quoted\\"' in text and "back\\\\slash" in text and "a\\nnewline" in text
    parsed = parse(text)["qsupervisor_test"]
    assert parsed.type == "gauge"  # type: ignore[attr-defined]
    assert parsed.documentation == "help with \\ and\nnewline"  # type: ignore[attr-defined]
    [sample] = parsed.samples  # type: ignore[attr-defined]
    assert sample.labels == {"program": nasty, "state": "x"} and sample.value == 3


def test_values() -> None:
    assert exposition.format_value(2**63 + 1) == str(2**63 + 1)  # exact, not 9.2e18
    assert exposition.format_value(True) == "1"
    assert exposition.format_value(0.1) == "0.1"
    assert exposition.format_value(math.inf) == "+Inf"
    assert exposition.format_value(-math.inf) == "-Inf"
    assert exposition.format_value(math.nan) == "NaN"
    family = Family("x", "gauge", "h")
    for value in (1.5e-9, math.inf, -math.inf, 0, 12345678901234):
        family.add((), value)
    values = [s.value for s in parse(exposition.render([family]))["x"].samples]  # type: ignore[attr-defined]
    assert values == [1.5e-9, math.inf, -math.inf, 0, 12345678901234]


def test_counter_and_histogram() -> None:
    counter = Family("qsupervisor_jobs_total", "counter", "jobs")
    counter.add((("program", "p"), ("outcome", "done")), 7)
    histogram = Family("qsupervisor_job_duration_seconds", "histogram", "durations")
    histogram.add_histogram((("program", "p"),), (0.1, 1.0), [2, 5, 6], 9.25)
    families = parse(exposition.render([counter, histogram]))
    jobs = families["qsupervisor_jobs"]  # the parser names a counter without _total
    assert jobs.type == "counter"  # type: ignore[attr-defined]
    [sample] = jobs.samples  # type: ignore[attr-defined]
    assert (sample.name, sample.value) == ("qsupervisor_jobs_total", 7)
    durations = families["qsupervisor_job_duration_seconds"]
    assert durations.type == "histogram"  # type: ignore[attr-defined]
    found = {(s.name, s.labels.get("le")): s.value for s in durations.samples}  # type: ignore[attr-defined]
    assert found == {
        ("qsupervisor_job_duration_seconds_bucket", "0.1"): 2,
        ("qsupervisor_job_duration_seconds_bucket", "1.0"): 5,
        ("qsupervisor_job_duration_seconds_bucket", "+Inf"): 6,
        ("qsupervisor_job_duration_seconds_sum", None): 9.25,
        ("qsupervisor_job_duration_seconds_count", None): 6,
    }


def test_the_text_ends_with_a_newline_and_has_help_and_type_first() -> None:
    family = Family("a", "untyped", "h")
    family.add((), 1)
    assert exposition.render([family]) == "# HELP a h\n# TYPE a untyped\na 1\n"
