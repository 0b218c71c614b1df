"""What a bad configuration file reports: every problem, each with file, line and key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

# A position inside a YAML document: mapping keys and sequence indexes from the root.
KeyPath = tuple[Union[str, int], ...]


def format_key(path: KeyPath) -> str:
    """Render a key path the way users write it: 'programs.orders.preload[1]'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class Problem:
    file: str            # as the user named it (relative stays relative)
    line: int | None  # 1-based; None when the problem has no position (unreadable file)
    key: str             # dotted key path, "" for file-level problems
    message: str
    column: int | None = None  # 1-based; YAML syntax errors point at the character

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists everything found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)
