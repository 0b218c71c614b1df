"""The exit statuses a leader or worker leaves with, and what the master reads in them.

A contract between tiers: the worker and the leader exit with these, the master
(master/exits.py) decides from them what an exit means. Kept here, below all three, so the
master never imports the worker's or the leader's code to know them.
"""

from __future__ import annotations

# A worker's statuses.
EXIT_HANDLER_IMPORT = 3  # the handler could not be imported (or the command not found): a start failure
EXIT_STOP_TIMEOUT = 4  # had to leave with a job still running
EXIT_JOB_TIMEOUT = 5  # a job ran past `timeout`; its message was retried or dead-lettered

# A leader's: its preload list failed to import (it said why on its channel first).
EXIT_PRELOAD_FAILED = 3

# The status of a child whose own code raised something it did not handle (sysexits.h's
# EX_SOFTWARE): a leader or worker that dies this way is a crash, whatever it was doing.
EXIT_INTERNAL_ERROR = 70

# Seconds a worker's I/O thread gets to settle a timed-out job's message before the worker
# leaves with EXIT_JOB_TIMEOUT; the master's job-timeout watchdog waits at least this long
# past `timeout` before it kills a worker that could not leave by itself.
ABANDON_GRACE = 10.0
