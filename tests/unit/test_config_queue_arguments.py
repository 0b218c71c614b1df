"""queue_arguments and bindings: what the loader accepts, what it refuses (with file,
line and key), and what the program queue's declaration becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from qsupervisor.broker.declarations import ROLE_BOUND, BindingDecl, ExchangeDecl, QueueDecl
from qsupervisor.broker.topology import Topology, conflict_hint
from qsupervisor.config import load_config
from qsupervisor.config.model import Binding, DelayConfig

from .config_files import problems, program, write

YII = """
    programs:
      yii:
        handler: app.jobs:handle
        queue: queue
        queue_type: classic
        queue_arguments:
          x-max-priority: 10
        bindings:
          - exchange: exchange
            routing_key: ""
    """


def test_a_yii_program_loads_with_its_arguments_and_binding(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "queues.yaml", YII))
    yii = config.programs["yii"]
    assert yii.queue_arguments == (("x-max-priority", 10),)
    assert yii.bindings == (Binding(exchange="exchange", routing_key="", type="direct",
                                    durable=True),)


def test_unknown_x_arguments_pass_with_their_yaml_type(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            queue_arguments: {x-plugin-mode: fast, x-plugin-level: 3, x-plugin-on: true}
        """)
    assert load_config(path).programs["orders"].queue_arguments == (
        ("x-plugin-level", 3), ("x-plugin-mode", "fast"), ("x-plugin-on", True))


@pytest.mark.parametrize("text, key, message", [
    ("x-max-priority: 0", "x-max-priority", "expected an integer between 1 and 255, got 0"),
    ("x-max-priority: 256", "x-max-priority", "expected an integer between 1 and 255, got 256"),
    ("x-max-priority: '10'", "x-max-priority", "expected an integer between 1 and 255, got '10'"),
    ("x-message-ttl: 30s", "x-message-ttl", "expected whole milliseconds as RabbitMQ takes "
     "them (30000 for 30 seconds), got '30s'"),
    ("x-message-ttl: -1", "x-message-ttl", "expected an integer between 0 and 2147483647, got -1"),
    ("x-expires: 0", "x-expires", "expected an integer between 1 and 2147483647, got 0"),
    ("x-overflow: drop-tail", "x-overflow", "expected one of drop-head, reject-publish, "
     "reject-publish-dlx, got 'drop-tail'; did you mean 'drop-head'?"),
    ("x-single-active-consumer: 1", "x-single-active-consumer", "expected true or false, got 1"),
    ("x-queue-type: classic", "x-queue-type",
     "set the queue's type with the program's queue_type: classic or quorum"),
    ("max-priority: 10", "max-priority",
     "unknown queue argument (RabbitMQ's start with 'x-'); did you mean 'x-max-priority'?"),
    ("x-max-priorty: 10", "x-max-priorty", "unknown queue argument; did you mean 'x-max-priority'?"),
    ("x-plugin: 1.5", "x-plugin", "expected a string, an integer or true/false, got 1.5"),
    ("x-plugin: [1]", "x-plugin", "expected a string, an integer or true/false, got a list"),
    ("x-dead-letter-routing-key: ''", "x-dead-letter-routing-key", "needs x-dead-letter-exchange "
     "too (RabbitMQ refuses a dead-letter routing key without an exchange)"),
])
def test_bad_arguments_name_file_line_and_key(tmp_path: Path, text: str, key: str,
                                              message: str) -> None:
    path = write(tmp_path / "queues.yaml", f"""
        programs:
          orders:
            handler: app.jobs:handle
            queue_type: classic
            queue_arguments:
              {text}
        """)
    assert problems(path) == [f"{path}:6: programs.orders.queue_arguments.{key}: {message}"]


@pytest.mark.parametrize("queue_type, text, message", [
    ("quorum", "x-max-priority: 10", "not accepted on quorum queues: RabbitMQ refuses "
     "x-max-priority on quorum queues (3.10 and 4.x); use queue_type: classic for a priority "
     "queue (RabbitMQ 4.0 quorum queues give messages of priority 5 and above precedence "
     "without it)"),
    ("quorum", "x-queue-mode: lazy", "not accepted on quorum queues: quorum queues keep their "
     "messages on disk anyway"),
    ("classic", "x-delivery-limit: 3", "not accepted on classic queues: classic queues do not "
     "count deliveries (RabbitMQ refuses the argument)"),
    ("quorum", "x-overflow: reject-publish-dlx", "quorum queues do not support "
     "reject-publish-dlx: RabbitMQ logs a warning and drops the oldest messages instead "
     "(drop-head); use reject-publish or drop-head"),
])
def test_arguments_the_queue_type_refuses_are_problems(tmp_path: Path, queue_type: str,
                                                       text: str, message: str) -> None:
    key = text.split(":")[0]
    path = write(tmp_path / "queues.yaml", f"""
        programs:
          orders:
            handler: app.jobs:handle
            queue_type: {queue_type}
            queue_arguments:
              {text}
        """)
    assert problems(path) == [f"{path}:6: programs.orders.queue_arguments.{key}: {message}"]


def test_the_default_queue_type_is_quorum_for_the_argument_checks(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            queue_arguments: {x-max-priority: 10}
        """)
    assert len(problems(path)) == 1 and "quorum" in problems(path)[0]


def test_bad_bindings_name_the_item_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            bindings:
              - {exchange: jobs, typ: topic}
              - jobs
              - {routing_key: a}
              - {exchange: jobs, type: headers}
        """)
    assert problems(path) == [
        f"{path}:5: programs.orders.bindings[0].typ: unknown key; did you mean 'type'?",
        f"{path}:6: programs.orders.bindings[1]: expected a mapping such as "
        "{exchange: jobs, routing_key: ''}, got 'jobs'",
        f"{path}:7: programs.orders.bindings[2]: missing required key 'exchange'",
        f"{path}:8: programs.orders.bindings[3].type: expected one of direct, fanout, topic, "
        "got 'headers'",
    ]


def test_duplicate_and_inconsistent_bindings_and_the_own_delay_exchange_are_refused(
        tmp_path: Path) -> None:
    path = write(tmp_path / "queues.yaml", """
        programs:
          orders:
            handler: app.jobs:handle
            bindings:
              - {exchange: jobs}
              - {exchange: jobs, routing_key: ""}
              - {exchange: jobs, routing_key: b, type: topic}
          other:
            handler: app.jobs:handle
            bindings: [{exchange: other.delay, routing_key: "#", type: topic}]
        """)
    assert problems(path) == [
        f"{path}:6: programs.orders.bindings[1]: the same binding as item 0",
        f"{path}:7: programs.orders.bindings[2]: exchange 'jobs' is declared differently by an "
        "earlier item: one exchange has one type",
        f"{path}:10: programs.other.bindings[0].exchange: 'other.delay' is the delay exchange of "
        "this program (its retries and delayed messages pass through it); bind to the exchange "
        "the producers publish to",
    ]


def test_the_program_queue_is_declared_with_its_arguments_then_its_bindings() -> None:
    yii = program("yii", queue_type="classic", queue_arguments=(("x-max-priority", 10),),
                  bindings=(Binding("exchange"), Binding("exchange", "urgent"),
                            Binding("amq.topic", "jobs.#", "topic")))
    decls = Topology.for_program(yii, DelayConfig()).declarations()
    assert decls[0] == QueueDecl("yii", {"x-queue-type": "classic", "x-max-priority": 10},
                                 role="program queue")
    assert decls[1:5] == [
        ExchangeDecl("exchange", "direct", True, role=ROLE_BOUND),
        BindingDecl("exchange", "yii", "", role=ROLE_BOUND),
        BindingDecl("exchange", "yii", "urgent", role=ROLE_BOUND),
        BindingDecl("amq.topic", "yii", "jobs.#", role=ROLE_BOUND),  # amq.*: bound, never declared
    ]
    # The dead-letter queue and the delay chain are qsupervisor's own: no user arguments.
    assert decls[5] == QueueDecl("yii.failed", {"x-queue-type": "classic"},
                                 role="dead-letter queue")
    assert all("x-max-priority" not in d.arguments for d in decls[5:] if isinstance(d, QueueDecl))


def test_a_program_without_them_declares_what_it_did_before() -> None:
    decls = Topology.for_program(program("orders"), DelayConfig()).declarations()
    assert decls[0] == QueueDecl("orders", {"x-queue-type": "quorum"}, role="program queue")
    assert not any(d.role == ROLE_BOUND for d in decls)


@pytest.mark.parametrize("queue_arguments, current_yaml, hint", [
    ((), "10", "the queue exists with x-max-priority 10: add `queue_arguments: "
     "{x-max-priority: 10}` to program 'yii' to use it as it is"),
    ((("x-max-priority", 5),), "10", "the queue exists with x-max-priority 10: set "
     "`queue_arguments: {x-max-priority: 10}` to program 'yii'"),
    ((("x-max-priority", 5),), None, "the queue exists without x-max-priority: remove "
     "x-max-priority from queue_arguments of program 'yii'"),
])
def test_conflict_hints_say_what_to_write(queue_arguments: tuple[tuple[str, int], ...],
                                          current_yaml: str | None, hint: str) -> None:
    yii = program("yii", queue_type="classic", queue_arguments=queue_arguments)
    layout = Topology.for_program(yii, DelayConfig())
    queue = layout.declarations()[0]
    assert isinstance(queue, QueueDecl)
    text = conflict_hint(layout, queue, "x-max-priority", current_yaml, current_yaml)
    assert text.startswith(hint), text
