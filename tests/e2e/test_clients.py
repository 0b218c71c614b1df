"""Producers in other languages, written as docs/messages.md tells them to, publishing to a
real qsupervisord program: PHP (php-amqplib; the docs' own snippet, run as written, and a
producer of typed headers) and Node (amqplib, pinned in tests/clients/node). The handler
(e2eapp.clients) records each job with the Python type of each header: every job handled,
delayed ones not early, headers as sent, and still as sent after retries and dead-lettering.

The PHP tests skip only when `php` is missing, and the Node ones when `node` or
tests/clients/node/node_modules is (`bash .ci/setup` installs them all).
"""

from __future__ import annotations

import decimal
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import qsupervisor.broker  # noqa: F401 - its header codec, for the dead letters we read

from .daemon import MakeDaemon
from .harness import BROKER_URL, PACKAGE_ROOT, Ledger, runtime_program, wait_for
from .rabbit import Broker

CLIENTS = PACKAGE_ROOT / "tests" / "clients"
MESSAGES_MD = PACKAGE_ROOT / "docs" / "messages.md"
PHP_AUTOLOAD = "/usr/share/php/PhpAmqpLib/autoload.php"
HANDLER = "e2eapp.clients:record"
DELAY = 2.0  # seconds; the docs' 90 s, shortened for the test
PHP = shutil.which("php")
NODE = shutil.which("node")
needs_php = pytest.mark.skipif(PHP is None, reason="php is not installed (bash .ci/setup "
                                                   "installs php-cli and php-amqplib)")
needs_node = pytest.mark.skipif(
    NODE is None or not (CLIENTS / "node" / "node_modules" / "amqplib").is_dir(),
    reason="node or tests/clients/node/node_modules is missing (bash .ci/setup installs "
           "nodejs and runs npm ci there)")


def program(queue: str, ledger: Ledger, **settings: Any) -> dict[str, Any]:
    return runtime_program(queue, ledger, handler=HANDLER, **settings)


def run(args: list[str], **kwargs: Any) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)
    assert result.returncode == 0, f"{args[0]} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def entries_by_payload(ledger: Ledger, count: int) -> list[dict[str, Any]]:
    return wait_for(lambda: len(ledger.entries()) >= count and ledger.entries(),
                    timeout=DELAY + 30, what=lambda: f"{count} jobs in the ledger, "
                                                    f"got {ledger.entries()}")


def dead_letter_headers(broker: Broker, queue: str) -> dict[str, Any]:
    wait_for(lambda: broker.counts(f"{queue}.failed").messages == 1,
             what="the failing job in the dead-letter queue")
    (properties, _), = broker.peek(f"{queue}.failed")
    return {k: v for k, v in properties.headers.items() if not k.startswith("x-")}


# -- PHP ----------------------------------------------------------------------------------


def docs_php_snippet(queue: str, delay: float) -> str:
    """The PHP block of docs/messages.md, with the queue and delay of the test: the lines
    it sets them in must be there as documented, or the test fails."""
    text = MESSAGES_MD.read_text()
    section = text[text.index("### PHP (php-amqplib)"):]
    code = re.search(r"```php\n(.*?)```", section, re.S)
    assert code, "no ```php block in docs/messages.md's PHP section"
    snippet = code.group(1)
    for line, value in ((r"\$queue = 'orders';", f"$queue = '{queue}';"),
                        (r"\$delay = 90\.0;", f"$delay = {delay!r};")):
        snippet, found = re.subn(line, value, snippet)
        assert found == 1, f"docs/messages.md's PHP snippet no longer has {line}"
    assert snippet.startswith("<?php\n")
    return snippet.replace("<?php\n", f"<?php\nrequire_once '{PHP_AUTOLOAD}';\n", 1)


@needs_php
def test_the_php_snippet_of_the_docs_runs_as_written_now_at_once_delayed_never_early(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger, tmp_path: Path) -> None:
    queue = broker.declare("php-docs")
    daemon = daemons({"php-docs": program(queue, ledger)})
    daemon.start()
    script = tmp_path / "snippet.php"
    script.write_text(docs_php_snippet(queue, DELAY))

    published = time.time()
    run([str(PHP), str(script)])
    returned = time.time()
    now, delayed = sorted(entries_by_payload(ledger, 2), key=lambda e: e["payload"]["order_id"])

    assert (now["payload"], delayed["payload"]) == ({"order_id": 42}, {"order_id": 43})
    assert now["due"] is None, "the message published now carries a due-at"
    assert now["t"] < published + DELAY, "the message published now waited for the delay"
    assert delayed["t"] >= published + DELAY, f"ran {published + DELAY - delayed['t']:.3f}s early"
    assert delayed["t"] <= returned + DELAY + 5.0
    assert delayed["due"] / 1000 >= published + DELAY
    assert len(ledger.entries()) == 2


PHP_TYPED = {
    "byte": ["int", -5], "ubyte": ["int", 250], "short": ["int", -1000],
    "ushort": ["int", 65535], "long": ["int", -100000], "ulong": ["int", 4000000000],
    "longlong": ["int", -1099511627776], "decimal": ["Decimal", "19.90"],
    "timestamp": ["datetime", "2023-11-14T22:13:20+00:00"], "bool": ["bool", True],
    "string": ["str", "héllo"], "bytes": ["bytes", "00ff"], "void": ["NoneType", None],
    "array": ["list", [["int", 1], ["str", "two"], ["str", "2.5"]]],
    "table": ["dict", {"price": ["str", "2.5"], "n": ["int", 7]}],
    "price": ["str", "2.5"],  # php-amqplib 3.5 sends a PHP float as a string
}


@needs_php
def test_php_typed_headers_arrive_as_sent_and_survive_retries_and_dead_lettering(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("php-types")
    daemon = daemons({"php-types": program(queue, ledger, attempts=2)})
    daemon.start()
    producer = str(CLIENTS / "php" / "typed_headers.php")
    ok_id = run([str(PHP), producer, queue, '{"job": 1}']).strip()
    failing_id = run([str(PHP), producer, queue, '{"job": 2, "fail": true}']).strip()

    entries = ledger.wait_for_ids([ok_id, failing_id])
    runs = wait_for(lambda: [e for e in ledger.entries() if e["id"] == failing_id][1:],
                    what="the failing job's second attempt")
    for entry in entries + runs:
        assert entry["headers"] == PHP_TYPED, entry["id"]
    assert broker.counts(queue).messages == 0
    dead = dead_letter_headers(broker, queue)
    assert dead == {"byte": -5, "ubyte": 250, "short": -1000, "ushort": 65535, "long": -100000,
                    "ulong": 4000000000, "longlong": -1099511627776,
                    "decimal": decimal.Decimal("19.90"),
                    "timestamp": dead["timestamp"], "bool": True, "string": "héllo",
                    "bytes": b"\x00\xff", "void": None, "array": [1, "two", "2.5"],
                    "table": {"price": "2.5", "n": 7}, "price": "2.5"}
    assert dead["timestamp"].isoformat() == "2023-11-14T22:13:20+00:00"


# -- Node ---------------------------------------------------------------------------------

NODE_HEADERS = {
    "price": 2.5, "count": 42, "negative": -5, "short": -1000, "big": -(2 ** 40),
    "ratio": {"!": "float", "value": 0.1}, "name": "héllo", "flag": True, "nothing": None,
    "blob": {"$hex": "00ff"}, "list": [1.5, -2, "x"], "nested": {"price": 19.99, "n": -1},
    "when": {"!": "timestamp", "value": 1700000000},
    "money": {"!": "decimal", "value": {"places": 2, "digits": 1990}},
}
NODE_TYPED = {
    "price": ["float", 2.5], "count": ["int", 42], "negative": ["int", -5],
    "short": ["int", -1000], "big": ["int", -(2 ** 40)], "ratio": ["float", 0.1],
    "name": ["str", "héllo"], "flag": ["bool", True], "nothing": ["NoneType", None],
    "blob": ["bytes", "00ff"], "list": ["list", [["float", 1.5], ["int", -2], ["str", "x"]]],
    "nested": ["dict", {"price": ["float", 19.99], "n": ["int", -1]}],
    "when": ["datetime", "2023-11-14T22:13:20+00:00"], "money": ["Decimal", "19.90"],
}


@needs_node
def test_a_node_producer_per_the_docs_plain_and_delayed_headers_as_sent(
        daemons: MakeDaemon, broker: Broker, ledger: Ledger) -> None:
    queue = broker.declare("node")
    daemon = daemons({"node": program(queue, ledger, workers=2, attempts=2)})
    daemon.start()
    jobs = [{"body": {"n": n}, "headers": NODE_HEADERS} for n in range(10)]
    jobs += [{"body": {"n": 10 + n}, "delay": DELAY + n * 0.5, "headers": NODE_HEADERS}
             for n in range(5)]
    jobs += [{"body": {"n": 99, "fail": True}, "headers": NODE_HEADERS}]

    published = time.time()
    out = run([str(NODE), str(CLIENTS / "node" / "producer.js"), BROKER_URL, queue,
               f"{queue}.delay", json.dumps(jobs)])
    ids = out.split()
    assert len(ids) == len(jobs)

    entries = ledger.wait_for_ids(ids, timeout=DELAY + 30)
    first_runs = {e["id"]: e for e in reversed(entries)}  # the first line of each id
    assert sorted(first_runs) == sorted(ids)
    for message_id, job in zip(ids, jobs):
        entry = first_runs[message_id]
        assert entry["payload"] == job["body"]
        assert entry["headers"] == NODE_TYPED, message_id
        if job.get("delay"):
            assert entry["t"] >= published + job["delay"], f"{job} ran early"
        else:
            assert entry["due"] is None
    ok = [e for e in ledger.entries() if not e["payload"].get("fail")]
    assert len(ok) == len(jobs) - 1, "a job ran twice"
    dead = dead_letter_headers(broker, queue)
    assert dead["price"] == 2.5 and type(dead["price"]) is float
    assert (dead["negative"], dead["big"], dead["ratio"]) == (-5, -(2 ** 40), 0.1)
    assert dead["nested"] == {"price": 19.99, "n": -1} and dead["list"] == [1.5, -2, "x"]
    assert [e["headers"] for e in ledger.entries() if e["id"] == ids[-1]] == [NODE_TYPED] * 2
