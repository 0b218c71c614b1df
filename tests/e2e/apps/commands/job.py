"""A command run per job by the end-to-end tests' command programs (`command:`).

Reads the job (JSON) from stdin and appends what it saw to the ledger ($E2E_LEDGER): the
message id and attempt from the environment qsupervisor sets, its own argv, pid and
worker, and when it started and ended. A job may ask it to print, to sleep, to leave a
background process behind (its pid is recorded), or to exit with a status.
Standard library only: it runs under any python3.
"""

import json
import os
import subprocess
import sys
import time


def record(**entry):
    entry.update(id=os.environ["QSUPERVISOR_MESSAGE_ID"],
                 attempt=int(os.environ["QSUPERVISOR_ATTEMPT"]),
                 worker=int(os.environ["QSUPERVISOR_WORKER_PID"]), pid=os.getpid())
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(os.environ["E2E_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def main():
    job = json.loads(sys.stdin.buffer.read() or b"{}")
    started = time.time()
    child = None
    if job.get("spawn"):
        # Left behind in the job's session, holding nothing open: only the session's end
        # can stop it.
        child = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
    sleep = job.get("sleep", 0) if job.get("sleep_until_attempt", 99) >= \
        int(os.environ["QSUPERVISOR_ATTEMPT"]) else 0
    if sleep:
        # The ledger's "started" lines: a test waits for the job to be in hand.
        with open(os.environ["E2E_LEDGER"] + ".started", "a") as f:
            f.write(json.dumps({"id": os.environ["QSUPERVISOR_MESSAGE_ID"], "pid": os.getpid(),
                                "child": child}) + "\n")
    if job.get("stdout"):
        print(job["stdout"], flush=True)
    if job.get("stderr"):
        print(job["stderr"], file=sys.stderr, flush=True)
    time.sleep(sleep)
    record(argv=sys.argv[1:], child=child, t0=started, t1=time.time(),
           headers=json.loads(os.environ.get("QSUPERVISOR_HEADERS", "{}")))
    sys.exit(job.get("exit", 0))


main()
