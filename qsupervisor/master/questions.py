"""Workers' crash questions, and the stale job a question can reveal.

A worker asks how many runs of a message were lost (the crash ledger, crashes.py) only
when the broker redelivered it, and the broker redelivers a message only after the
channel it was delivered on has closed. So if another live worker of the pool still has
that message as its job in hand (its stats segment's job id), that worker's delivery is
dead: whatever it does, its ack can never land, and the two would run the job at the same
time. That happens when a handler holds the GIL past the heartbeat timeout (a long C
call): pika's I/O thread cannot answer heartbeats, the broker closes the connection and
gives the message to the next worker, while the first still runs it.

The master then kills the stale worker (its exit is `killed: its message was redelivered`,
replaced at once, its job recorded in the ledger as a failed attempt) and answers the
question only once that exit has been handled, so the count includes the lost run and the
two never run together. The answer is bounded by ANSWER_BOUND in case the exit is never
reported; the worker waits longer than that (worker/main.py, CRASH_QUERY_TIMEOUT).

Message ids derived from the body (DERIVED_ID_PREFIX) are not unique: two messages with
the same body share one, and a worker running the other copy legitimately must not be
killed for it. For those the question is answered at once, as before; the worker's own
`unsettled` report (when its job ends after the connection died) still counts the lost run.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable

from qsupervisor import ipc, logs
from qsupervisor.channel import CRASH_ANSWER_BOUND
from qsupervisor.job import DERIVED_ID_PREFIX
from qsupervisor.master.crashes import CrashLedger
from qsupervisor.master.exits import KILLED_FOR_REDELIVERY
from qsupervisor.master.host import Host
from qsupervisor.master.loop import Timer
from qsupervisor.master.process import WorkerProc

log = logs.get("qsupervisor.master")

# How long a question waits for the stale worker's exit before it is answered anyway. A
# SIGKILLed worker is reaped and reported by its leader within milliseconds; only a wedged
# leader keeps it longer.
ANSWER_BOUND = CRASH_ANSWER_BOUND


@dataclass(eq=False)
class _Question:
    asker: WorkerProc
    rid: object
    message_id: str
    holder: WorkerProc  # the worker killed for holding the message
    timer: Timer | None = None


class CrashQuestions:
    def __init__(self, host: Host, ledger: CrashLedger, program: Callable[[], str],
                 live: Callable[[], list[WorkerProc]]) -> None:
        self._host = host
        self._ledger = ledger
        self._program = program  # the program's name, for the log
        self._live = live
        self._waiting: list[_Question] = []

    def ask(self, asker: WorkerProc, rid: object, message_id: str) -> None:
        holder = self._holder(asker, message_id)
        if holder is None:
            self._answer(asker, rid, message_id)
            return
        question = _Question(asker, rid, message_id, holder)
        question.timer = self._host.loop.call_later(ANSWER_BOUND,
                                                    lambda: self._overdue(question))
        self._waiting.append(question)
        if holder.killed is None and holder.pid is not None:
            log.warning("a worker's message was redelivered to another worker (its broker "
                        "connection is gone); killing it", program=self._program(),
                        slot=holder.slot, pid=holder.pid, message_id=message_id,
                        asked_by=asker.pid)
            holder.killed = KILLED_FOR_REDELIVERY
            self._host.processes.signal(holder.pid, signal.SIGKILL)

    def worker_gone(self, worker: WorkerProc) -> None:
        """Called once a worker's exit is accounted (its job in the ledger): the questions
        that waited for it get their answer now."""
        for question in [q for q in self._waiting if q.holder is worker]:
            self._settle(question)

    def pending(self) -> str | None:
        """A question waiting for a stale worker's exit: a re-exec waits until it is
        answered (it has a reply owed on a worker's channel)."""
        if not self._waiting:
            return None
        return f"a crash question waits for the exit of worker pid {self._waiting[0].holder.pid}"

    def _overdue(self, question: _Question) -> None:
        log.warning("the worker holding a redelivered message has not exited; answering "
                    "the crash question without it", program=self._program(),
                    pid=question.holder.pid, message_id=question.message_id,
                    waited=ANSWER_BOUND)
        self._settle(question)

    def _settle(self, question: _Question) -> None:
        if question not in self._waiting:
            return
        self._waiting.remove(question)
        if question.timer is not None:
            question.timer.cancel()
        self._answer(question.asker, question.rid, question.message_id)

    def _holder(self, asker: WorkerProc, message_id: str) -> WorkerProc | None:
        """Another live worker whose job in hand is this message, when the id names one
        message only."""
        if message_id.startswith(DERIVED_ID_PREFIX):
            return None
        for worker in self._live():
            if worker is asker or worker.stats is None or worker.pid is None:
                continue
            if worker.stats.read().job_id == message_id:
                return worker
        return None

    def _answer(self, asker: WorkerProc, rid: object, message_id: str) -> None:
        if asker.channel is None:
            return  # the worker that asked has gone; the count stays for the next one
        count, how = self._ledger.take(message_id)
        try:
            ipc.send(asker.channel, {"rid": rid, "count": count, "how": how})
        except BlockingIOError:
            log.warning("worker not reading its channel; crash count not answered",
                        program=self._program(), slot=asker.slot, pid=asker.pid)
        except OSError:
            pass  # the worker that asked has died since
