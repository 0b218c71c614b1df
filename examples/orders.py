"""The `orders` handler: imported by each worker after fork, so `reload orders` makes
edits here take effect."""

from __future__ import annotations

from typing import Any

import qsupervisor
from examples import catalog


def process_order(order: dict[str, Any]) -> None:
    items = order.get("items", [])
    total = sum(catalog.PRICES.get(item, 0) for item in items)
    job = qsupervisor.current_job()
    print(f"order {order.get('id')}: {len(items)} items, total {total / 100:.2f} "
          f"(message {job.message_id if job else '-'}, catalog v{catalog.VERSION})", flush=True)
