"""YAML to plain Python values, remembering the line every key and item came from.

yaml.safe_load throws positions away, and a config error without a line number sends
the user hunting. So we compose the node graph with PyYAML's SafeLoader, convert it
ourselves and keep a map from key path to line. Doing the conversion ourselves also
lets us report duplicate keys (PyYAML silently keeps the last one) and keep mapping
keys as the text the user typed (so a program called `on` or `123` stays a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .problems import KeyPath, Problem, format_key

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Aliases can make a small file expand exponentially ("billion laughs"); no sane
# configuration gets anywhere near this many values.
_MAX_VALUES = 100_000


@dataclass
class YamlDocument:
    file: str  # name used in problems
    value: Any  # dicts (in document order), lists, and scalars; None for an empty file
    lines: dict[KeyPath, int] = field(default_factory=dict)
    raw: dict[KeyPath, str] = field(default_factory=dict)  # scalar text as written
    # Values that could not be converted (already reported): validation skips them so
    # the user hears about each mistake once, not again as "expected a string, got null".
    broken: set[KeyPath] = field(default_factory=set)

    def is_broken(self, path: KeyPath) -> bool:
        """True if the value at `path`, or anything inside it, failed to convert."""
        return any(bad[: len(path)] == path for bad in self.broken)

    def line(self, path: KeyPath) -> int | None:
        """Line of `path`, or of its nearest recorded ancestor (e.g. for a missing key)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: KeyPath, message: str) -> Problem:
        return Problem(self.file, self.line(path), format_key(path), message)


class _TooLarge(Exception):
    pass


class _Converter:
    def __init__(self, doc: YamlDocument, loader: yaml.SafeLoader) -> None:
        self.doc = doc
        self.loader = loader
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()  # nodes being converted: an alias to one is a cycle

    def convert(self, node: Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > _MAX_VALUES:
            raise _TooLarge()
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.active:
            return self._broken(path, "recursive YAML alias")
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if node.tag not in (_MAP_TAG, _SEQ_TAG):
                return self._broken(path, f"unsupported YAML tag {_short_tag(node.tag)}")
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        self.doc.raw[path] = node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            # e.g. an unknown tag such as !env or !!python/object
            return self._broken(path, getattr(exc, "problem", None) or str(exc))
        except Exception:  # noqa: BLE001 - PyYAML lets ValueError etc. escape
            # An unquoted 2024-13-45 looks like a date to YAML and fails to convert;
            # so does an explicit "!!int abc".
            return self._broken(path, f"cannot read {node.value!r} as {_short_tag(node.tag)}")

    def _broken(self, path: KeyPath, message: str) -> None:
        self.doc.broken.add(path)
        self.problems.append(self.doc.problem(path, message))

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        self._report_duplicates(node, path)
        result: dict[str, Any] = {}
        for key_node, value_node in self._pairs(node, path):
            key = key_node.value
            # The key's own line is what users look for, even when the value is on the
            # next line (a block list or mapping).
            self.doc.lines[path + (key,)] = key_node.start_mark.line + 1
            result.pop(key, None)  # re-insert so an overriding key keeps its own position
            result[key] = self.convert(value_node, path + (key,))
        return result

    def _pairs(self, node: MappingNode, path: KeyPath) -> list[tuple[ScalarNode, Node]]:
        """(key, value) node pairs, lowest priority first, with `<<` merge keys expanded.

        Done here rather than with SafeConstructor.flatten_mapping, which mutates the
        node graph and whose details changed between PyYAML releases.
        """
        merged: list[tuple[ScalarNode, Node]] = []
        own: list[tuple[ScalarNode, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_source(value_node, path))
            elif not isinstance(key_node, ScalarNode):
                line = key_node.start_mark.line + 1
                self.problems.append(
                    Problem(self.doc.file, line, format_key(path), "mapping keys must be plain strings")
                )
            else:
                own.append((key_node, value_node))
        return merged + own

    def _merge_source(self, value_node: Node, path: KeyPath) -> list[tuple[ScalarNode, Node]]:
        if isinstance(value_node, MappingNode):
            return self._pairs(value_node, path)
        if isinstance(value_node, SequenceNode) and all(
            isinstance(item, MappingNode) for item in value_node.value
        ):
            # Earlier mappings in a merge list win, so they go last (highest priority).
            pairs: list[tuple[ScalarNode, Node]] = []
            for item in reversed(value_node.value):
                pairs.extend(self._pairs(item, path))
            return pairs
        line = value_node.start_mark.line + 1
        message = "'<<' (merge) needs a mapping or a list of mappings"
        self.problems.append(Problem(self.doc.file, line, format_key(path), message))
        return []

    def _report_duplicates(self, node: MappingNode, path: KeyPath) -> None:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                message = f"duplicate key (first defined at line {first_line[key_node.value]})"
                key = format_key(path + (key_node.value,))
                self.problems.append(Problem(self.doc.file, line, key, message))
            else:
                first_line[key_node.value] = line


def _short_tag(tag: str) -> str:
    """'!!timestamp' rather than 'tag:yaml.org,2002:timestamp', as users write it."""
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


def _syntax_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    """The problem where a person would point at it: PyYAML notices most mistakes later
    (an unclosed bracket at the end of the file, a missing ':' on the next line)."""
    if isinstance(exc, yaml.reader.ReaderError):
        # Raised for control characters; it carries an offset rather than a mark.
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return Problem(file, line, "", f"YAML syntax error: unacceptable character #x{ord(char):04x}")
    mark = getattr(exc, "problem_mark", None)
    opened = getattr(exc, "context_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None) or ""
    unclosed = _UNCLOSED.get(context)
    if unclosed is not None and opened is not None:
        # Point at the bracket or quote that was never closed, not at where the parser gave up.
        found = "the end of the file" if mark is None or "end" in what else f"line {mark.line + 1}"
        return Problem(file, opened.line + 1, "", f"YAML syntax error: {unclosed} is never "
                       f"closed (the parser reached {found} still inside it)", opened.column + 1)
    if mark is None:
        return Problem(file, None, "", f"YAML syntax error: {what}")
    if what == "mapping values are not allowed here":
        return _stray_colon(file, text, mark)
    plain = _PLAIN_WORDS.get(what)
    if plain is not None:
        return Problem(file, mark.line + 1, "", f"YAML syntax error: {plain}", mark.column + 1)
    # PyYAML splits messages as context + problem; join them back into one sentence.
    if context.startswith("while"):
        what = f"{what} ({context})"
    elif context:
        what = f"{context}, {what}"
    return Problem(file, mark.line + 1, "", f"YAML syntax error: {what}", mark.column + 1)


# PyYAML's words for the common mistakes, and what a person would say.
_PLAIN_WORDS = {
    "found character '\\t' that cannot start any token":
        "a tab in the indentation (YAML indents with spaces only)",
    "expected <block end>, but found '<block mapping start>'":
        "this line is indented to no level above it (line it up with a key above)",
    "expected <block end>, but found '<block sequence start>'":
        "this list item is indented to no level above it (line it up with a key above)",
}

_UNCLOSED = {"while parsing a flow sequence": "this '['",
             "while parsing a flow mapping": "this '{'",
             "while scanning a quoted scalar": "this quote"}


def _stray_colon(file: str, text: str, mark: Any) -> Problem:
    """A ': ' where a value continues from the line above: either that line lacks the ':'
    after its key, or this line is indented deeper than the key it belongs beside."""
    lines = text.split("\n")
    above = next((n for n in range(mark.line - 1, -1, -1)
                  if lines[n].strip() and not lines[n].lstrip().startswith("#")), None)
    if above is not None and not _KEY.match(lines[above]):
        return Problem(file, above + 1, "", "YAML syntax error: no ':' after the key on this "
                       f"line (line {mark.line + 1} then reads as part of its value)",
                       len(lines[above]) - len(lines[above].lstrip()) + 1)
    return Problem(file, mark.line + 1, "", "YAML syntax error: a key indented deeper than "
                   "the one above it (or a plain value holding ': '; quote such a value)",
                   len(lines[mark.line]) - len(lines[mark.line].lstrip()) + 1)


_KEY = re.compile(r"^\s*(- +)?[^\s#'\"][^:#]*:(\s|$)|^\s*- ")


def parse_yaml(text: str, file: str) -> tuple[YamlDocument | None, list[Problem]]:
    """Parse one YAML document. Returns (None, [problem]) when the text is not valid YAML."""
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters up front
    except yaml.YAMLError as exc:
        return None, [_syntax_problem(file, text, exc)]
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            return None, [_syntax_problem(file, text, exc)]
        doc = YamlDocument(file=file, value=None)
        if root is None:  # empty file or only comments
            return doc, []
        converter = _Converter(doc, loader)
        try:
            doc.value = converter.convert(root, ())
        except _TooLarge:
            return None, [Problem(file, None, "", "too many values after expanding YAML aliases")]
        return doc, converter.problems
    finally:
        loader.dispose()

