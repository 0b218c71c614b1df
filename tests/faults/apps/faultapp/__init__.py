"""Handlers of the fault suite's programs (`path:` holds tests/faults/apps)."""
