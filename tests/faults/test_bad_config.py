"""A bad configuration file (a deploy that failed half-way) never stops what runs: an
empty, comment-only, programs-less, truncated or broken file is refused by `update`,
`SIGHUP` and `qsupervisord --check`, each naming the file, and changes nothing: the same
leader and workers keep consuming, and every message published around the attempts is
handled once.

(Moved here from tests/e2e/test_bad_input.py: it runs on the suite's own node.)
"""

from __future__ import annotations

import os
import signal
import subprocess

from e2e.daemon import run_ctl, worker_pids
from e2e.harness import QSUPERVISORD, wait_for

from .nodes import RabbitNode
from .support import (
    RECOVERY,
    Account,
    FaultLedger,
    MakeDaemon,
    NodeBroker,
    account,
    flow_program,
    report,
)

BAD_FILES = {
    "empty": "",
    "only comments": "# queues.yaml, emptied by a failed copy\n",
    "no programs key": "qsupervisord:\n  log_level: debug\n",
    "truncated after programs": None,  # the real file cut after its 'programs:' line
    "broken YAML": "programs:\n  orders: [handler: x\n",
}


def truncated(text: str) -> str:
    return text[: text.index("programs:") + len("programs:")] + "\n"


def test_a_bad_file_is_refused_by_update_hup_and_check_and_changes_nothing(
        daemons: MakeDaemon, broker: NodeBroker, ledger: FaultLedger,
        up_single_node: RabbitNode) -> None:
    queue = broker.declare("badfile")
    daemon = daemons({"orders": flow_program(queue, ledger, workers=2)},
                     broker=up_single_node.url)
    daemon.start()
    before = daemon.status()
    master = daemon.master_pid()
    good = daemon.config_path.read_text()
    published = broker.publish_batch(queue, ({"n": n} for n in range(10)))
    # Without a socket in a readable file, qsupervisorctl is pointed at it directly.
    target = ["-s", str(daemon.socket)]

    for name, text in BAD_FILES.items():
        daemon.config_path.write_text(truncated(good) if text is None else text)
        update = run_ctl(target, "update", as_json=False)
        assert update.returncode == 2, f"{name}: {update}"
        assert str(daemon.config_path) in update.stderr, f"{name}: {update}"
        check = subprocess.run([QSUPERVISORD, "--check", "-c", str(daemon.config_path)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 2, f"{name}: {check.stdout}{check.stderr}"
        assert str(daemon.config_path) in check.stdout + check.stderr, name
        os.kill(master, signal.SIGHUP)
        published += broker.publish_batch(queue, ({"n": n, "file": name} for n in range(5)))
        now = run_ctl(target, "status").json()
        assert now["programs"].keys() == {"orders"}, name
        assert now["programs"]["orders"]["state"] == "RUNNING", name
        assert (now["programs"]["orders"]["leader_pid"]
                == before["programs"]["orders"]["leader_pid"]), name
        assert worker_pids(now, "orders") == worker_pids(before, "orders"), name

    daemon.config_path.write_text(good)
    published += broker.publish_batch(queue, ({"n": n} for n in range(5)))

    def settled() -> Account | None:
        now = account(published, ledger.runs())
        return now if now.settled() else None

    final = wait_for(settled, timeout=RECOVERY, interval=0.5,
                     what=lambda: f"every message handled: {account(published, ledger.runs())}")
    report("bad-config", final, files=len(BAD_FILES), refusals=3 * len(BAD_FILES))
    assert final.lost == 0 and final.duplicates == 0, final
    assert daemon.master_pid() == master
    assert not [e for e in daemon.log_events() if e.get("event") == "configuration applied"]
