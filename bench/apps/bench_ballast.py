"""A stand-in for an application's heavy preloaded code: a few MB of long-lived objects
(a catalogue, a routing table, compiled templates...) built at import time."""

from __future__ import annotations

CATALOGUE = {f"sku-{i:06d}": (f"product number {i} " * 2, i * 1.5, i % 7 == 0)
             for i in range(40_000)}
TABLE = [tuple(range(i % 50)) for i in range(20_000)]
BLOB = bytes(range(256)) * (8 * 1024)  # 2 MiB of bytes


def size_hint() -> int:
    return len(CATALOGUE) + len(TABLE) + len(BLOB)
