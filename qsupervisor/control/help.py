"""What each control command does, in one line, written once: the help qsupervisorctl
prints for it. A unit test keeps this list the same as the daemon's commands
(master/commands.py), so a new command cannot be added on one side only."""

from __future__ import annotations

COMMAND_HELP: dict[str, str] = {
    "status": "show the master, programs and workers",
    "start": "start programs",
    "stop": "stop programs gracefully",
    "restart": "stop programs, then start them",
    "reload": "replace workers (rolling) so they run fresh handler code",
    "scale": "change a program's worker count (pins an autoscaled one; --auto releases)",
    "reread": "validate the configuration file and show the changes",
    "update": "apply the configuration file",
    "signal": "send a signal to every worker of a program",
    "pid": "print the master's pid, or a program's pids",
    "tail": "show a program's captured worker output",
    "reopen": "reopen log files (after logrotate)",
    "shutdown": "stop every program, then the daemon",
    "fleet": "show every daemon on this broker and its programs",
    "reexec": "re-execute the daemon in place, on the installed code (no job stops)",
    "version": "show the daemon's version",
}
