"""A handler module whose first import hangs and every later one fails: one slot of its
program stays STARTING, so the crash-backoff floor (which acts only when no worker is
starting or running) never shortens the other slots' backoff, which grows 1 s, 2 s, 4 s...
as each restart fails. $E2E_HANG_LOCK names the file the first import creates."""

import os
import time

try:
    _fd = os.open(os.environ["E2E_HANG_LOCK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    raise ImportError("e2eapp.one_hangs: only the first import hangs; this one fails "
                      "(on purpose)") from None
os.close(_fd)
time.sleep(3600)


def work(payload: object) -> None:
    """Never reached."""
