"""The `emails` handler: pretends to send a message."""

from __future__ import annotations

import time
from typing import Any


def send_email(message: dict[str, Any]) -> None:
    if "to" not in message:
        raise ValueError("an email needs a 'to' address")
    time.sleep(0.05)  # a slow partner API
    print(f"email to {message['to']}: {message.get('subject', '(no subject)')}", flush=True)
