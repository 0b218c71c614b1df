"""The `{name}` placeholders a program's `command:` may use in its arguments.

One definition for the configuration (which refuses an unknown name when the file is
loaded, not at the first job) and the worker (which fills them in for each job).

Only `{name}`, a name alone in braces, is a placeholder; every other brace is literal, so
that shell, PHP or awk code in an argument (`{ echo; }`, `function () { ... }`) needs no
escaping. `{{name}}` stands for the literal text `{name}`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Final

PLACEHOLDERS: Final = ("message_id", "attempt", "attempts", "timeout", "program", "queue",
                       "worker_pid", "redelivered")

# Group 1: an escaped {{name}}; group 2: a placeholder {name}.
_PATTERN = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def names_in(arg: str) -> list[str]:
    """The placeholder names `arg` uses, in order."""
    return [m.group(2) for m in _PATTERN.finditer(arg) if m.group(2)]


def problem(arg: str) -> str | None:
    """Why `arg` cannot be used as a command argument, or None."""
    for name in names_in(arg):
        if name not in PLACEHOLDERS:
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1, cutoff=0.6)
            if close:
                return f"unknown placeholder {{{name}}}; did you mean {{{close[0]}}}?"
            known = ", ".join("{" + n + "}" for n in PLACEHOLDERS)
            return (f"unknown placeholder {{{name}}} (known: {known}; write {{{{{name}}}}} "
                    f"for the text {{{name}}})")
    return None


def uses_placeholders(arg: str) -> bool:
    return _PATTERN.search(arg) is not None


def fill(arg: str, values: Mapping[str, object]) -> str:
    """`arg` with its placeholders replaced; `arg` has passed `problem()`."""
    def one(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        return "{" + escaped + "}" if escaped else str(values[name])
    return _PATTERN.sub(one, arg)
