"""Declaring what a program needs on the broker: its queue, its dead-letter queue and its
delay chain, idempotently, once when the program starts.

RabbitMQ answers a declaration that contradicts an existing queue or exchange by closing
the channel with 406 PRECONDITION_FAILED and a reply text naming the argument. We turn
that into a TopologyConflict that says which object, which argument, both values and what
to do, so the program is not started and the user knows why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import pika.exceptions

from qsupervisor.broker.declarations import (
    ROLE_BOUND,
    ROLE_DEAD_LETTER,
    ROLE_QUEUE,
    BindingDecl,
    Declaration,
    ExchangeDecl,
    QueueDecl,
)
from qsupervisor.broker.delays import DelayChain

if TYPE_CHECKING:
    from qsupervisor.config.model import Binding, DelayConfig, ProgramConfig, QueueArgument

ChannelFactory = Callable[[], Any]  # returns a fresh pika BlockingChannel

PRECONDITION_FAILED = 406
NOT_FOUND = 404

# The dead-letter queue's delivery limit: none, in effect. Its messages are only looked at
# and moved, never failed, so no return there may count towards a limit (RabbitMQ 4 sets
# 20 on every quorum queue). Not -1, which 4.x reads as "no limit" but 3.x as "drop at the
# first return": this value means the same to both, so a cluster can be upgraded under it.
DELIVERY_LIMIT = "x-delivery-limit"
UNLIMITED_DELIVERIES = 2**31 - 1

KeptQueue = Callable[[str, str], None]  # (queue, why): told when an earlier queue is kept

# "inequivalent arg 'x-queue-type' for queue 'orders' in vhost '/': received 'quorum' but
# current is 'classic'". A value is 'text', none, or "the value 'text' of type 'longstr'".
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']*)' for (?P<kind>queue|exchange) '(?P<name>.*)' "
    r"in vhost '.*': received (?P<wanted>.+) but current is (?P<current>.+)$")
_VALUE = re.compile(r"(?:the value )?'(?P<value>.*?)'(?: of type '[^']*')?")


class TopologyError(Exception):
    """The broker refused a declaration (permissions, a conflict, ...)."""


class TopologyConflict(TopologyError):
    """A queue or exchange exists with other settings than the program declares."""

    def __init__(self, kind: str, name: str, argument: str | None, current: str | None,
                 wanted: str | None, hint: str, reply_text: str) -> None:
        self.kind, self.name, self.argument = kind, name, argument
        self.current, self.wanted = current, wanted  # None: the argument is not set
        self.hint, self.reply_text = hint, reply_text
        if argument is None:  # a reply text we could not parse: show it as it is
            what = f"{kind} '{name}' already exists with other settings ({reply_text})"
        else:
            what = (f"{kind} '{name}' already exists with {argument} {_shown(current)}, "
                    f"but it is declared with {argument} {_shown(wanted)}")
        super().__init__(f"{what}: {hint}")


def _shown(value: str | None) -> str:
    return "unset" if value is None else f"'{value}'"


@dataclass(frozen=True)
class Topology:
    """What one program has on the broker."""

    program: str
    queue: str
    queue_type: str
    dead_letter_queue: str
    chain: DelayChain
    queue_arguments: tuple[tuple[str, QueueArgument], ...] = ()
    bindings: tuple[Binding, ...] = ()

    @classmethod
    def for_program(cls, program: ProgramConfig, delay: DelayConfig) -> Topology:
        return cls(program=program.name, queue=program.queue, queue_type=program.queue_type,
                   dead_letter_queue=program.dead_letter_queue or f"{program.queue}.failed",
                   chain=DelayChain.for_program(program, delay),
                   queue_arguments=program.queue_arguments, bindings=program.bindings)

    def declarations(self) -> list[Declaration]:
        # The program queue gets x-queue-type and the user's queue_arguments only: we
        # dead-letter by publishing ourselves (with confirms), so it needs no broker-side
        # dead-lettering arguments, and its producers (other applications, other
        # frameworks) may declare it too: every argument we add is one they would have to
        # repeat exactly. x-queue-type 'classic' is no such argument: RabbitMQ takes a
        # classic queue declared without it and one declared with it as equivalent, both
        # ways (tests/broker/test_broker_bindings.py checks it on the broker at hand).
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type, **dict(self.queue_arguments)}
        return [QueueDecl(self.queue, arguments, role=ROLE_QUEUE),
                *self.binding_declarations(),
                self.dead_letter_declaration(),
                *self.chain.declarations()]

    def binding_declarations(self) -> list[Declaration]:
        """Each bound exchange (declared as its producers declare it, so the queue is bound
        whoever comes first), then the binding."""
        declarations: list[Declaration] = []
        for binding in self.bindings:
            # RabbitMQ refuses to declare an amq.* exchange (403), even as it exists: those
            # are the broker's own and always there, so they are only bound to.
            if not binding.exchange.startswith("amq."):
                exchange = ExchangeDecl(binding.exchange, binding.type, binding.durable,
                                        role=ROLE_BOUND)
                if exchange not in declarations:
                    declarations.append(exchange)
            declarations.append(BindingDecl(binding.exchange, self.queue, binding.routing_key,
                                            role=ROLE_BOUND))
        return declarations

    def dead_letter_declaration(self) -> QueueDecl:
        """The dead-letter queue is qsupervisor's alone; as a quorum queue it has no
        delivery limit. One made before qsupervisor set that is kept as it is."""
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.queue_type != "quorum":
            return QueueDecl(self.dead_letter_queue, arguments, role=ROLE_DEAD_LETTER)
        return QueueDecl(self.dead_letter_queue,
                         {**arguments, DELIVERY_LIMIT: UNLIMITED_DELIVERIES},
                         role=ROLE_DEAD_LETTER, earlier=arguments)


def declare(channel_factory: ChannelFactory, program: ProgramConfig,
            delay_config: DelayConfig, kept: KeptQueue | None = None) -> Topology:
    """Declare the program's queues and delay chain; raise TopologyConflict on a mismatch.

    Idempotent: declaring what exists with the same settings changes nothing. Stops at
    the first refusal, since the broker closes the channel with it; except a queue that
    exists as an earlier qsupervisor declared it, which is kept (and `kept` told why).
    """
    topology = Topology.for_program(program, delay_config)
    channel = channel_factory()
    try:
        for declaration in topology.declarations():
            try:
                _apply(channel, declaration)
            except pika.exceptions.ChannelClosedByBroker as exc:
                channel = channel_factory()
                if not _keep_earlier(channel, declaration, exc):
                    raise _refusal(topology, declaration, exc) from None
                if kept is not None and isinstance(declaration, QueueDecl):
                    kept(declaration.name, earlier_queue_note(declaration.name))
    finally:
        if channel.is_open:
            channel.close()
    retire_legacy_levels(channel_factory, topology.chain, kept)
    return topology


def retire_legacy_levels(channel_factory: ChannelFactory, chain: DelayChain,
                         kept: KeptQueue | None = None) -> None:
    """Take the classic level queues of an earlier release out of the chain: unbound, they
    receive nothing more, while what they hold still expires into the chain's next level
    (their dead-letter exchange is unchanged); deleted once empty, on this or a later start."""
    channel = channel_factory()
    try:
        for k in range(chain.levels):
            if not channel.is_open:
                channel = channel_factory()
            left = _retire_legacy_level(channel, chain, k)
            if left and kept is not None:
                name = chain.legacy_level_queue(k)
                kept(name, f"delay level queue '{name}' of an earlier qsupervisor (classic) "
                           f"receives no more messages; its {left} waiting messages move on "
                           "when due, and it is deleted once empty, at a later start")
    finally:
        if channel.is_open:
            channel.close()


def _retire_legacy_level(channel: Any, chain: DelayChain, k: int) -> int:
    """Unbind level k's legacy queue and delete it if empty; the messages it still holds
    (0 when it does not exist or is gone)."""
    name = chain.legacy_level_queue(k)
    try:
        waiting = int(channel.queue_declare(name, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return 0
        raise
    exchange, pattern = chain.wait_binding(k)
    channel.queue_unbind(name, exchange, pattern)
    if waiting:
        return waiting
    try:
        channel.queue_delete(name, if_empty=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:  # 406: a message came in meanwhile
            raise
        return 1
    return 0


def _keep_earlier(channel: Any, declaration: Declaration,
                  exc: pika.exceptions.ChannelClosedByBroker) -> bool:
    """True if the refused queue exists with the arguments of an earlier qsupervisor;
    declared with those, so the caller can go on."""
    if not isinstance(declaration, QueueDecl) or declaration.earlier is None:
        return False
    if exc.reply_code != PRECONDITION_FAILED:
        return False
    argument, current, _ = parse_inequivalent(str(exc.reply_text))
    if argument is None or current is not None or argument in declaration.earlier:
        return False  # not an argument added since: a real conflict
    try:
        _apply(channel, QueueDecl(declaration.name, declaration.earlier, declaration.durable,
                                  declaration.role))
    except pika.exceptions.ChannelClosedByBroker:
        return False
    return True


def earlier_queue_note(queue: str) -> str:
    return (f"dead-letter queue '{queue}' was created by an earlier qsupervisor, without "
            f"{DELIVERY_LIMIT}; it is used as it is, and qsupervisorctl failed refreshes its "
            "messages so that looking never uses them up (docs/operations.md, RabbitMQ 4)")


def delivery_limited(channel_factory: ChannelFactory, topology: Topology) -> bool:
    """True if the program's dead-letter queue is a quorum queue made without the
    unlimited delivery limit (by an earlier qsupervisor, or by hand): returns to it count
    towards whatever limit the broker applies. Declares it, so call it when it exists."""
    declaration = topology.dead_letter_declaration()
    if declaration.earlier is None:
        return False
    channel = channel_factory()
    try:
        _apply(channel, declaration)
        return False
    except pika.exceptions.ChannelClosedByBroker:
        return True
    finally:
        if channel.is_open:
            channel.close()


def _apply(channel: Any, declaration: Declaration) -> None:
    if isinstance(declaration, QueueDecl):
        channel.queue_declare(declaration.name, durable=declaration.durable,
                              arguments=dict(declaration.arguments))
    elif isinstance(declaration, ExchangeDecl):
        channel.exchange_declare(declaration.name, declaration.type, durable=declaration.durable)
    elif declaration.to_exchange:
        channel.exchange_bind(declaration.destination, declaration.source, declaration.routing_key)
    else:
        channel.queue_bind(declaration.destination, declaration.source, declaration.routing_key)


def _refusal(topology: Topology, declaration: Declaration,
             exc: pika.exceptions.ChannelClosedByBroker) -> TopologyError:
    reply = str(exc.reply_text)
    if isinstance(declaration, BindingDecl):
        return TopologyError(f"cannot bind '{declaration.destination}' to exchange "
                             f"'{declaration.source}': {exc.reply_code} {reply}")
    if exc.reply_code != PRECONDITION_FAILED:
        return TopologyError(f"cannot declare {declaration.kind} '{declaration.name}' "
                             f"({declaration.role} of program '{topology.program}'): "
                             f"{exc.reply_code} {reply}")
    argument, current, wanted = parse_inequivalent(reply)
    if argument is None and declaration.role == ROLE_QUEUE and "invalid arg" in reply:
        # Not a conflict with an existing queue: this broker refuses the argument itself
        # (x-queue-leader-locator on a 3.x classic queue, say).
        return TopologyError(f"cannot declare queue '{declaration.name}' of program "
                             f"'{topology.program}': {reply}; RabbitMQ refused one of its "
                             f"queue_arguments (this version may not accept it on a "
                             f"{topology.queue_type} queue: see docs/configuration.md)")
    hint = conflict_hint(topology, declaration, argument, current, _current_yaml(reply))
    return TopologyConflict(declaration.kind, declaration.name, argument, current, wanted,
                            hint, reply)


def parse_inequivalent(reply_text: str) -> tuple[str | None, str | None, str | None]:
    """(argument, broker's value, declared value) from a 406 reply text; Nones if unknown."""
    match = _INEQUIVALENT.search(reply_text)
    if match is None:
        return None, None, None
    return match["argument"], _value(match["current"]), _value(match["wanted"])


def _value(text: str) -> str | None:
    if text.strip() == "none":
        return None
    match = _VALUE.fullmatch(text.strip())
    return match["value"] if match else text.strip()


_TYPED = re.compile(r"the value '(?P<value>.*?)' of type '(?P<type>[^']*)'")
_PLAIN_YAML = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")


def _current_yaml(reply_text: str) -> str | None:
    """The broker's value of the conflicting argument as a YAML value for the config file:
    10, true, or a quoted string. None if the reply does not give one."""
    match = _INEQUIVALENT.search(reply_text)
    if match is None or match["current"].strip() == "none":
        return None
    text = match["current"].strip()
    typed = _TYPED.fullmatch(text)
    value = typed["value"] if typed else _value(text) or ""
    kind = typed["type"] if typed else None
    if kind == "bool" or (kind is None and value in ("true", "false")):
        return value
    if kind != "longstr" and re.fullmatch(r"-?[0-9]+", value):
        return value  # 3.x leaves the type out when both sides give a value: 10 reads as 10
    if _PLAIN_YAML.fullmatch(value) and value not in ("true", "false", "null", "yes", "no",
                                                      "on", "off"):
        return value
    return "'" + value.replace("'", "''") + "'"


def conflict_hint(topology: Topology, declaration: QueueDecl | ExchangeDecl,
                  argument: str | None, current: str | None,
                  current_yaml: str | None = None) -> str:
    """What the user can do about a conflict, which depends on what the object is for."""
    program = topology.program
    if declaration.role == ROLE_BOUND:
        setting = {"type": "type", "durable": "durable"}.get(argument or "")
        if setting is not None and current is not None:
            return (f"exchange '{declaration.name}' exists with {setting} {current}: set "
                    f"`{setting}: {current}` in program '{program}''s binding to it, as its "
                    "other declarers have it")
        return (f"exchange '{declaration.name}' was declared by something else with other "
                f"settings; declare it the same way in program '{program}''s bindings")
    if declaration.role in (ROLE_QUEUE, ROLE_DEAD_LETTER):
        if argument == "x-queue-type":
            keep = "classic" if current is None else current
            return (f"set queue_type: {keep} for program '{program}' to keep the queue as it is, "
                    f"or move its messages away and delete queue '{declaration.name}' so it "
                    f"can be declared as {topology.queue_type}")
        if declaration.role == ROLE_QUEUE and argument is not None:
            return _argument_hint(topology, declaration.name, argument, current_yaml)
        return (f"queue '{declaration.name}' was created by something else with other "
                f"settings; delete it (after moving its messages) or point program "
                f"'{program}' at another queue")
    chain = topology.chain
    return (f"the delay chain '{chain.exchange}' was declared with other settings (another "
            f"delay resolution or version?); once its queues {chain.level_queue(0)} .. "
            f"{chain.level_queue(chain.levels - 1)} are empty, delete them and its exchanges, "
            f"or set delay_exchange to a new name for program '{program}'")


def _argument_hint(topology: Topology, queue: str, argument: str,
                   current_yaml: str | None) -> str:
    """A program queue that exists with another value of one of its arguments (another
    framework declared it): declare it as it is, since RabbitMQ cannot change it."""
    program = topology.program
    recreate = (f"RabbitMQ cannot change an existing queue's arguments: to change it, move "
                f"its messages away and delete queue '{queue}'")
    if current_yaml is None:
        return (f"the queue exists without {argument}: remove {argument} from queue_arguments "
                f"of program '{program}' to use it as it is ({recreate})")
    verb = "set" if argument in dict(topology.queue_arguments) else "add"
    return (f"the queue exists with {argument} {current_yaml}: {verb} `queue_arguments: "
            f"{{{argument}: {current_yaml}}}` to program '{program}' to use it as it is "
            f"({recreate})")


def queue_depth(channel_factory: ChannelFactory, queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of `queue`, or None if it does not exist."""
    channel = channel_factory()
    try:
        ok = channel.queue_declare(queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return None
        raise
    finally:
        if channel.is_open:
            channel.close()
    return int(ok.message_count), int(ok.consumer_count)
